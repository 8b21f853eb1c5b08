#include "pgfanout/libpq_connect.hpp"

#include <libpq-fe.h>

#include <vector>

#include <pqxx/except>

#include "pgfanout/log_text.hpp"
#include "pgfanout/masking.hpp"

namespace pgfanout {
namespace {

void replace_all(std::string& text, std::string_view from, std::string_view to) {
  if (from.empty()) return;
  for (auto at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
}

// libpq's message without the passwords `conninfo` holds. libpq quotes parts of a
// conninfo it cannot parse (a URI whole, or the token that failed), so a message about a
// conninfo that does not parse keeps none of its quoted text.
std::string without_credentials(std::string message, const std::string& conninfo) {
  char* parse_error = nullptr;
  PQconninfoOption* options = PQconninfoParse(conninfo.c_str(), &parse_error);
  if (options == nullptr) {
    PQfreemem(parse_error);
    std::string out;
    bool quoted = false;
    for (char c : message) {
      if (c == '"') {
        out += quoted ? "...\"" : "\"";
        quoted = !quoted;
      } else if (!quoted) {
        out += c;
      }
    }
    return out;
  }
  replace_all(message, conninfo, mask_conninfo(conninfo));
  for (PQconninfoOption* o = options; o->keyword != nullptr; ++o) {
    std::string_view key = o->keyword;
    if ((key == "password" || key == "sslpassword") && o->val != nullptr) {
      replace_all(message, o->val, "****");
    }
  }
  PQconninfoFree(options);
  return message;
}

}  // namespace

void LibpqFinish::operator()(pg_conn* conn) const { PQfinish(conn); }

LibpqConnection connect_libpq(const std::string& conninfo,
                              std::initializer_list<LibpqSetting> settings,
                              std::string_view what) {
  std::string prefix = what.empty() ? std::string() : std::string(what) + ": ";
  // PQconnectdbParams takes NUL-terminated strings; the copies live until it returns.
  std::vector<std::string> values_held;
  values_held.reserve(settings.size());
  std::vector<const char*> keys{"dbname"};
  std::vector<const char*> values{conninfo.c_str()};
  for (const auto& [key, value] : settings) {
    keys.push_back(key);
    values.push_back(values_held.emplace_back(value).c_str());
  }
  keys.push_back(nullptr);
  values.push_back(nullptr);
  LibpqConnection conn(PQconnectdbParams(keys.data(), values.data(), 1));
  if (!conn) throw pqxx::broken_connection(prefix + "out of memory opening a connection");
  if (PQstatus(conn.get()) != CONNECTION_OK) {
    throw pqxx::broken_connection(
        prefix + without_credentials(one_line(PQerrorMessage(conn.get())), conninfo));
  }
  return conn;
}

}  // namespace pgfanout
