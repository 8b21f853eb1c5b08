#pragma once

// The logical replication stream of PostgreSQL 15 as a replication connection receives it
// (START_REPLICATION SLOT ... LOGICAL ... (proto_version '1' or '2', publication_names ...)
// with the pgoutput plugin; no streaming of in-progress transactions, no binary mode,
// no two-phase). Pure decoding and encoding: bytes in, structs out, no I/O.
//
// Everything here reads bytes a server sent, and a server may be an impostor or a broken
// one: every parser checks each length against the bytes left before it reads or
// allocates, and throws ProtocolError rather than read past the buffer. Formats: the
// PostgreSQL 15 documentation, "Streaming Replication Protocol" (the CopyData framing)
// and "Logical Replication Message Formats" (the pgoutput payloads).

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace pgfanout::pgoutput {

using Lsn = std::uint64_t;

/// Bytes that are not what the protocol allows; the message says what is wrong.
class ProtocolError : public std::runtime_error {
  using runtime_error::runtime_error;
};

/// An LSN as PostgreSQL prints it: two upper-case hex halves without padding, "16/B374D848".
std::string format_lsn(Lsn);
/// The inverse, as pg_lsn's input accepts it (1 to 8 hex digits either side of '/', either
/// case); nullopt on anything else.
std::optional<Lsn> parse_lsn(std::string_view);

/// Timestamps in the protocol are microseconds since 2000-01-01 00:00:00 UTC.
std::int64_t pg_now_us();
/// A protocol timestamp as the outbox's `ts` is sent (publisher/outbox_reader.cpp:
/// to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')), e.g.
/// "2026-11-21T05:18:39.123456+00:00": always 6 fraction digits. Like to_char, a year
/// before 1 AD prints as its BC number without a sign; PostgreSQL's infinities
/// (INT64_MAX, INT64_MIN) print as "infinity" and "-infinity".
std::string iso_utc(std::int64_t pg_us);

// --- The walsender's CopyData framing ---------------------------------------------------

/// 'w': WAL data; `payload` is one pgoutput message (parse_message) and points into the
/// buffer given to parse_copy_data.
struct XLogData {
  Lsn wal_start;
  Lsn wal_end;
  std::int64_t send_time;
  std::string_view payload;
};
/// 'k': the server's keepalive; `reply_requested` asks for a status update at once (the
/// server disconnects after wal_sender_timeout without one).
struct Keepalive {
  Lsn wal_end;
  std::int64_t send_time;
  bool reply_requested;
};
/// One CopyData message from the server. Throws ProtocolError on any other tag, on a
/// short message, and on a keepalive with bytes after its fields.
std::variant<XLogData, Keepalive> parse_copy_data(std::string_view data);
/// The 'r' standby status update (34 bytes) to send back as CopyData. The server keeps
/// the WAL of everything after `flushed` for the slot (confirmed_flush_lsn).
std::string standby_status_update(Lsn written, Lsn flushed, Lsn applied, std::int64_t now_pg_us,
                                  bool reply_requested);

// --- pgoutput messages ------------------------------------------------------------------

/// A column's value in TupleData: SQL NULL, an unchanged TOASTed value the server did not
/// send ('u', only in an Update's new row), the value's text form, or (binary mode only)
/// its binary send form.
enum class ValueKind : char { Null = 'n', Unchanged = 'u', Text = 't', Binary = 'b' };
struct Value {
  ValueKind kind = ValueKind::Null;
  std::string bytes;  ///< empty unless Text or Binary
  bool operator==(const Value&) const = default;
};
/// One value per column of the Relation message that came before, in its order.
using Tuple = std::vector<Value>;

struct Column {
  bool key = false;  ///< part of the replica identity
  std::string name;
  std::uint32_t type_oid = 0;
  std::int32_t typmod = -1;
  bool operator==(const Column&) const = default;
};

struct Begin {
  Lsn final_lsn = 0;  ///< the commit record's LSN
  std::int64_t commit_time = 0;
  std::uint32_t xid = 0;
};
struct Commit {
  std::uint8_t flags = 0;  ///< unused by PostgreSQL 15 (0)
  Lsn commit_lsn = 0;
  Lsn end_lsn = 0;  ///< the end of the transaction's WAL: what to confirm once it is shipped
  std::int64_t commit_time = 0;
};
/// The transaction was replayed from another origin (its commit LSN there).
struct Origin {
  Lsn lsn = 0;
  std::string name;
};
/// Sent before the first change of a relation in a session and again after its
/// definition changed. `schema` is empty for pg_catalog.
struct Relation {
  std::uint32_t oid = 0;
  std::string schema;
  std::string name;
  char replica_identity = 'd';  ///< 'd' default, 'n' nothing, 'f' full, 'i' index
  std::vector<Column> columns;
};
/// A non-built-in type used by the next Relation (in text mode its name is informative).
struct Type {
  std::uint32_t oid = 0;
  std::string schema;
  std::string name;
};
struct Insert {
  std::uint32_t relid = 0;
  Tuple row;
};
/// `old_kind` 'K': `old` holds the replica identity's key columns (the others are Null),
/// sent only when the key changed; 'O': the whole old row (REPLICA IDENTITY FULL); 0: no
/// old tuple (`old` empty).
struct Update {
  std::uint32_t relid = 0;
  char old_kind = 0;
  Tuple old;
  Tuple row;
};
struct Delete {
  std::uint32_t relid = 0;
  char old_kind = 'K';  ///< 'K' or 'O', as for Update
  Tuple old;
};
struct Truncate {
  bool cascade = false;
  bool restart_identity = false;
  std::vector<std::uint32_t> relids;
};
/// pg_logical_emit_message() (only with the `messages` option).
struct LogicalMessage {
  bool transactional = false;
  Lsn lsn = 0;
  std::string prefix;
  std::string content;
};

using Message =
    std::variant<Begin, Commit, Origin, Relation, Type, Insert, Update, Delete, Truncate, LogicalMessage>;

/// One pgoutput message (an XLogData payload). Throws ProtocolError naming what is wrong:
/// truncated, an unknown tag, a bad tuple or old-tuple kind, a count the bytes left cannot
/// hold, bytes after the message, and the messages of streamed ('S', 'E', 'c', 'A') or
/// two-phase transactions, which the publisher does not request.
Message parse_message(std::string_view payload);

}  // namespace pgfanout::pgoutput
