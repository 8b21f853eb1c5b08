#include "pgfanout/amqp_url.hpp"

#include <charconv>
#include <stdexcept>

namespace pgfanout {
namespace {

std::string percent_decode(std::string_view in, std::string_view what) {
  std::string out;
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out.push_back(in[i]);
      continue;
    }
    if (i + 2 >= in.size()) {
      throw std::invalid_argument("malformed percent-encoding in AMQP URL " + std::string(what));
    }
    int value = 0;
    auto [p, ec] = std::from_chars(in.data() + i + 1, in.data() + i + 3, value, 16);
    if (ec != std::errc() || p != in.data() + i + 3) {
      throw std::invalid_argument("malformed percent-encoding in AMQP URL " + std::string(what));
    }
    out.push_back(static_cast<char>(value));
    i += 2;
  }
  return out;
}

int parse_int(std::string_view s, std::string_view what, int lo, int hi) {
  int value = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (s.empty() || ec != std::errc() || p != s.data() + s.size() || value < lo || value > hi) {
    throw std::invalid_argument("invalid " + std::string(what) + " '" + std::string(s) +
                                "' in AMQP URL");
  }
  return value;
}

// The port's text is not quoted back: in a URL whose '@' is missing, or whose password
// holds an unencoded '/', the text after the last ':' is part of the password.
int parse_port(std::string_view s) {
  try {
    return parse_int(s, "port", 1, 65535);
  } catch (const std::invalid_argument&) {
    throw std::invalid_argument(
        "invalid port in AMQP URL (a number from 1 to 65535; a '/' or '@' in a password must "
        "be encoded as %2f or %40)");
  }
}

}  // namespace

AmqpUrl AmqpUrl::parse(std::string_view url) {
  AmqpUrl out;
  std::string_view rest;
  if (url.starts_with("amqp://")) {
    rest = url.substr(7);
  } else if (url.starts_with("amqps://")) {
    rest = url.substr(8);
    out.tls = true;
    out.port = 5671;
  } else {
    throw std::invalid_argument("AMQP URL must start with amqp:// or amqps://");
  }

  std::string_view query;
  if (auto q = rest.find('?'); q != std::string_view::npos) {
    query = rest.substr(q + 1);
    rest = rest.substr(0, q);
  }
  std::string_view authority = rest;
  std::optional<std::string_view> path;
  if (auto slash = rest.find('/'); slash != std::string_view::npos) {
    authority = rest.substr(0, slash);
    path = rest.substr(slash + 1);
  }

  if (auto at = authority.rfind('@'); at != std::string_view::npos) {
    std::string_view userinfo = authority.substr(0, at);
    authority = authority.substr(at + 1);
    if (auto colon = userinfo.find(':'); colon != std::string_view::npos) {
      out.user = percent_decode(userinfo.substr(0, colon), "user");
      out.password = percent_decode(userinfo.substr(colon + 1), "password");
    } else {
      out.user = percent_decode(userinfo, "user");
    }
  }

  std::string_view host = authority;
  if (authority.starts_with('[')) {
    auto close = authority.find(']');
    if (close == std::string_view::npos) throw std::invalid_argument("unterminated [ in AMQP host");
    host = authority.substr(1, close - 1);
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (!after.starts_with(':')) throw std::invalid_argument("malformed AMQP host");
      out.port = parse_port(after.substr(1));
    }
  } else if (auto colon = authority.rfind(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    out.port = parse_port(authority.substr(colon + 1));
  }
  if (!host.empty()) out.host = percent_decode(host, "host");
  if (out.host.find_first_of(" /?#@") != std::string::npos) {
    throw std::invalid_argument("invalid host '" + out.host + "' in AMQP URL");
  }

  // As in the AMQP URI spec: no path means the default vhost "/", an empty path "".
  // The check is on the raw path: an encoded slash (%2f) belongs to the vhost name.
  if (path && path->find('/') != std::string_view::npos) {
    throw std::invalid_argument("AMQP vhost must be one path segment (encode '/' as %2f)");
  }
  if (path) out.vhost = percent_decode(*path, "vhost");

  while (!query.empty()) {
    auto amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    if (pair.empty()) continue;
    auto eq = pair.find('=');
    if (eq == std::string_view::npos) {
      throw std::invalid_argument("AMQP URL option '" + std::string(pair) + "' has no value");
    }
    std::string_view key = pair.substr(0, eq);
    std::string value = percent_decode(pair.substr(eq + 1), "option");
    // On amqp:// they would do nothing, and the user would believe the link encrypted.
    if (!out.tls && (key == "cacert" || key == "certfile" || key == "keyfile" || key == "verify")) {
      throw std::invalid_argument("AMQP URL option '" + std::string(key) +
                                  "' is for TLS: use amqps://");
    }
    if (key == "heartbeat") {
      out.heartbeat = std::chrono::seconds(parse_int(value, "heartbeat", 0, 3600));
    } else if (key == "cacert") {
      out.cacert = value;
    } else if (key == "certfile") {
      out.certfile = value;
    } else if (key == "keyfile") {
      out.keyfile = value;
    } else if (key == "verify") {
      if (value == "true" || value == "1") {
        out.verify = true;
      } else if (value == "false" || value == "0") {
        out.verify = false;
      } else {
        throw std::invalid_argument("AMQP URL option verify must be true or false");
      }
    } else {
      throw std::invalid_argument("unknown AMQP URL option '" + std::string(key) + "'");
    }
  }
  if (out.certfile.empty() != out.keyfile.empty()) {
    throw std::invalid_argument("AMQP URL options certfile and keyfile go together");
  }
  return out;
}

std::vector<AmqpUrl> AmqpUrl::parse_list(std::string_view urls) {
  std::vector<AmqpUrl> out;
  for (std::size_t n = 1;; ++n) {
    auto comma = urls.find(',');
    std::string_view one = urls.substr(0, comma);
    while (!one.empty() && one.front() == ' ') one.remove_prefix(1);
    while (!one.empty() && one.back() == ' ') one.remove_suffix(1);
    if (one.empty()) throw std::invalid_argument("URL " + std::to_string(n) + " of the list is empty");
    try {
      out.push_back(parse(one));
    } catch (const std::invalid_argument& e) {
      if (n == 1 && comma == std::string_view::npos) throw;
      throw std::invalid_argument("URL " + std::to_string(n) + ": " + e.what());
    }
    if (comma == std::string_view::npos) return out;
    urls.remove_prefix(comma + 1);
  }
}

std::string AmqpUrl::masked() const {
  std::string s = tls ? "amqps://" : "amqp://";
  s += user;
  s += ":****@";
  if (host.find(':') != std::string::npos) {
    s += '[';
    s += host;
    s += ']';
  } else {
    s += host;
  }
  s += ':';
  s += std::to_string(port);
  s += '/';
  s += vhost == "/" ? "%2f" : vhost;
  return s;
}

}  // namespace pgfanout
