#include "pgfanout/masking.hpp"

#include <cctype>

namespace pgfanout {

std::string mask_url(std::string_view url) {
  auto scheme = url.find("://");
  if (scheme == std::string_view::npos) return std::string(url);
  auto start = scheme + 3;
  auto end = url.find_first_of("/?#", start);
  std::string_view authority = url.substr(start, end == std::string_view::npos ? url.npos : end - start);
  auto at = authority.rfind('@');
  std::string out(url.substr(0, start));
  if (at == std::string_view::npos) {
    out += authority;
  } else {
    auto colon = authority.substr(0, at).find(':');
    if (colon == std::string_view::npos) {
      out += authority.substr(0, at);
    } else {
      out += authority.substr(0, colon);
      out += ":****";
    }
    out += authority.substr(at);
  }
  if (end != std::string_view::npos) {
    std::string_view tail = url.substr(end);
    // URI query parameters may carry a password too (postgres://h/db?password=x).
    std::string masked_tail;
    size_t i = 0;
    while (i < tail.size()) {
      auto key = tail.find("password=", i);
      if (key == std::string_view::npos) {
        masked_tail += tail.substr(i);
        break;
      }
      masked_tail += tail.substr(i, key + 9 - i);
      masked_tail += "****";
      auto amp = tail.find('&', key);
      i = amp == std::string_view::npos ? tail.size() : amp;
    }
    out += masked_tail;
  }
  return out;
}

std::string mask_conninfo(std::string_view conninfo) {
  // libpq takes a URI only with these prefixes; anything else is key = value pairs, whose
  // values may contain "://" themselves.
  if (conninfo.starts_with("postgresql://") || conninfo.starts_with("postgres://")) {
    return mask_url(conninfo);
  }
  // key = value pairs; values may be single-quoted with backslash escapes.
  std::string out;
  size_t i = 0;
  const size_t n = conninfo.size();
  while (i < n) {
    while (i < n && std::isspace(static_cast<unsigned char>(conninfo[i]))) out += conninfo[i++];
    size_t key_start = i;
    while (i < n && conninfo[i] != '=' && !std::isspace(static_cast<unsigned char>(conninfo[i]))) ++i;
    std::string_view key = conninfo.substr(key_start, i - key_start);
    out += key;
    while (i < n && std::isspace(static_cast<unsigned char>(conninfo[i]))) out += conninfo[i++];
    if (i < n && conninfo[i] == '=') out += conninfo[i++];
    while (i < n && std::isspace(static_cast<unsigned char>(conninfo[i]))) out += conninfo[i++];
    size_t value_start = i;
    if (i < n && conninfo[i] == '\'') {
      ++i;
      while (i < n && conninfo[i] != '\'') i += (conninfo[i] == '\\' && i + 1 < n) ? 2 : 1;
      if (i < n) ++i;
    } else {
      while (i < n && !std::isspace(static_cast<unsigned char>(conninfo[i]))) ++i;
    }
    // sslpassword is the passphrase of an encrypted client key (sslkey).
    if (key == "password" || key == "sslpassword") {
      out += "****";
    } else {
      out += conninfo.substr(value_start, i - value_start);
    }
  }
  return out;
}

}  // namespace pgfanout
