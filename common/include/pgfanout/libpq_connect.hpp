#pragma once

#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

struct pg_conn;

namespace pgfanout {

struct LibpqFinish {
  void operator()(pg_conn* conn) const;
};
/// A raw libpq connection, closed (PQfinish) when dropped.
using LibpqConnection = std::unique_ptr<pg_conn, LibpqFinish>;

/// One connection setting that overrides what the user's conninfo says about it.
using LibpqSetting = std::pair<const char*, std::string_view>;

/// Opens a raw libpq connection, for what libpqxx 6.4 cannot do (COPY of a query,
/// replication). The user's conninfo or URI `conninfo` comes first and is expanded
/// (expand_dbname); `settings` follow it and override it (application_name,
/// replication, ...). Throws pqxx::broken_connection when the connection cannot be made,
/// its message prefixed with `what` when not empty and free of the conninfo's passwords.
LibpqConnection connect_libpq(const std::string& conninfo,
                              std::initializer_list<LibpqSetting> settings,
                              std::string_view what = {});

}  // namespace pgfanout
