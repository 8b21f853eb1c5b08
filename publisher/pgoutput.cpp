#include "pgoutput.hpp"

#include <chrono>
#include <cstdio>
#include <limits>

namespace pgfanout::pgoutput {
namespace {

// PostgreSQL's epoch (2000-01-01) in days and seconds after the Unix one.
constexpr std::int64_t kPgEpochUnixDays = 10957;
constexpr std::int64_t kPgEpochUnixSeconds = kPgEpochUnixDays * 86400;
constexpr std::int64_t kUsPerDay = 86400LL * 1000000;

// Reads one message front to back. Every read first checks that the bytes are there;
// `what_` names the message in every error, so that a log line says which one was bad.
class Reader {
 public:
  Reader(std::string_view in, const char* what) : in_(in), what_(what) {}

  std::uint8_t u8(const char* field) { return static_cast<std::uint8_t>(take(1, field)[0]); }
  std::uint16_t u16(const char* field) { return static_cast<std::uint16_t>(be(take(2, field))); }
  std::uint32_t u32(const char* field) { return static_cast<std::uint32_t>(be(take(4, field))); }
  std::int32_t i32(const char* field) { return static_cast<std::int32_t>(u32(field)); }
  std::uint64_t u64(const char* field) { return be(take(8, field)); }
  std::int64_t i64(const char* field) { return static_cast<std::int64_t>(u64(field)); }

  // A NUL-terminated string; the NUL must be inside the message.
  std::string cstring(const char* field) {
    std::size_t end = in_.find('\0');
    if (end == std::string_view::npos) fail(std::string(field) + " has no terminating NUL");
    std::string s(in_.substr(0, end));
    in_.remove_prefix(end + 1);
    return s;
  }

  std::string_view take(std::size_t n, const char* field) {
    if (n > in_.size())
      fail("truncated: " + std::string(field) + " needs " + std::to_string(n) + " bytes, " +
           std::to_string(in_.size()) + " left");
    std::string_view s = in_.substr(0, n);
    in_.remove_prefix(n);
    return s;
  }

  std::string_view rest() {
    std::string_view s = in_;
    in_ = {};
    return s;
  }

  // A count of items of at least `min_bytes` each: refused before anything is allocated
  // for them when the bytes left cannot hold that many.
  void check_count(std::uint64_t count, std::size_t min_bytes, const char* field) const {
    if (count > in_.size() / min_bytes)
      fail(std::string(field) + " " + std::to_string(count) + " does not fit in the " +
           std::to_string(in_.size()) + " bytes left");
  }

  void finish() const {
    if (!in_.empty()) fail(std::to_string(in_.size()) + " trailing bytes");
  }

  [[noreturn]] void fail(const std::string& why) const {
    throw ProtocolError(std::string(what_) + ": " + why);
  }

 private:
  static std::uint64_t be(std::string_view bytes) {
    std::uint64_t v = 0;
    for (char c : bytes) v = (v << 8) | static_cast<unsigned char>(c);
    return v;
  }

  std::string_view in_;
  const char* what_;
};

Tuple read_tuple(Reader& r) {
  std::uint16_t n = r.u16("column count");
  r.check_count(n, 1, "column count");  // a value is at least its kind byte
  Tuple t;
  t.reserve(n);
  for (std::uint16_t i = 0; i < n; ++i) {
    Value v;
    char kind = static_cast<char>(r.u8("value kind"));
    switch (kind) {
      case 'n':
      case 'u':
        v.kind = static_cast<ValueKind>(kind);
        break;
      case 't':
      case 'b': {
        v.kind = static_cast<ValueKind>(kind);
        std::int32_t len = r.i32("value length");
        if (len < 0) r.fail("negative value length " + std::to_string(len));
        v.bytes = std::string(r.take(static_cast<std::size_t>(len), "value"));
        break;
      }
      default:
        r.fail("bad tuple value kind " + std::to_string(static_cast<unsigned char>(kind)) + " in column " +
               std::to_string(i));
    }
    t.push_back(std::move(v));
  }
  return t;
}

Relation read_relation(Reader& r) {
  Relation m;
  m.oid = r.u32("relation oid");
  m.schema = r.cstring("schema");
  m.name = r.cstring("name");
  m.replica_identity = static_cast<char>(r.u8("replica identity"));
  switch (m.replica_identity) {
    case 'd':
    case 'n':
    case 'f':
    case 'i':
      break;
    default:
      r.fail("bad replica identity " + std::to_string(static_cast<unsigned char>(m.replica_identity)));
  }
  std::uint16_t n = r.u16("column count");
  r.check_count(n, 1 + 1 + 4 + 4, "column count");  // flags, name's NUL, type, typmod
  m.columns.reserve(n);
  for (std::uint16_t i = 0; i < n; ++i) {
    Column c;
    c.key = (r.u8("column flags") & 1) != 0;
    c.name = r.cstring("column name");
    c.type_oid = r.u32("column type");
    c.typmod = r.i32("column typmod");
    m.columns.push_back(std::move(c));
  }
  return m;
}

Update read_update(Reader& r) {
  Update m;
  m.relid = r.u32("relation oid");
  char kind = static_cast<char>(r.u8("tuple kind"));
  if (kind == 'K' || kind == 'O') {
    m.old_kind = kind;
    m.old = read_tuple(r);
    kind = static_cast<char>(r.u8("tuple kind"));
  }
  if (kind != 'N') r.fail("expected new tuple 'N', got byte " + std::to_string(static_cast<unsigned char>(kind)));
  m.row = read_tuple(r);
  return m;
}

Truncate read_truncate(Reader& r) {
  Truncate m;
  std::uint32_t n = r.u32("relation count");
  std::uint8_t flags = r.u8("truncate options");
  m.cascade = (flags & 1) != 0;
  m.restart_identity = (flags & 2) != 0;
  r.check_count(n, 4, "relation count");
  m.relids.reserve(n);
  for (std::uint32_t i = 0; i < n; ++i) m.relids.push_back(r.u32("relation oid"));
  return m;
}

void put64(std::string& out, std::uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<char>((v >> shift) & 0xff));
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// 1 to 8 hex digits: one half of an LSN.
std::optional<std::uint32_t> parse_half(std::string_view s) {
  if (s.empty() || s.size() > 8) return std::nullopt;
  std::uint32_t v = 0;
  for (char c : s) {
    int d = hex_digit(c);
    if (d < 0) return std::nullopt;
    v = (v << 4) | static_cast<std::uint32_t>(d);
  }
  return v;
}

}  // namespace

std::string format_lsn(Lsn lsn) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%X/%X", static_cast<unsigned>(lsn >> 32), static_cast<unsigned>(lsn & 0xffffffffu));
  return buf;
}

std::optional<Lsn> parse_lsn(std::string_view text) {
  std::size_t slash = text.find('/');
  if (slash == std::string_view::npos) return std::nullopt;
  auto hi = parse_half(text.substr(0, slash));
  auto lo = parse_half(text.substr(slash + 1));
  if (!hi || !lo) return std::nullopt;
  return (Lsn{*hi} << 32) | *lo;
}

std::int64_t pg_now_us() {
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(
                std::chrono::system_clock::now().time_since_epoch())
                .count();
  return us - kPgEpochUnixSeconds * 1000000;
}

std::string iso_utc(std::int64_t pg_us) {
  if (pg_us == std::numeric_limits<std::int64_t>::max()) return "infinity";
  if (pg_us == std::numeric_limits<std::int64_t>::min()) return "-infinity";
  // Floor division, so that instants before 2000 fall on the day before, not after.
  std::int64_t day = pg_us / kUsPerDay, in_day = pg_us % kUsPerDay;
  if (in_day < 0) {
    in_day += kUsPerDay;
    --day;
  }
  // Days since 1970 to a proleptic Gregorian date, by 400-year eras counted from 0000-03-01
  // (so that the leap day is the last day of its year).
  std::int64_t z = day + kPgEpochUnixDays + 719468;
  std::int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  std::int64_t doe = z - era * 146097;
  std::int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  std::int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  std::int64_t mp = (5 * doy + 2) / 153;
  std::int64_t d = doy - (153 * mp + 2) / 5 + 1;
  std::int64_t m = mp < 10 ? mp + 3 : mp - 9;
  std::int64_t y = yoe + era * 400 + (m <= 2 ? 1 : 0);
  // to_char's YYYY: the BC year number (1 BC is year 0) without a sign.
  if (y <= 0) y = 1 - y;

  std::int64_t secs = in_day / 1000000, frac = in_day % 1000000;
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04lld-%02lld-%02lldT%02lld:%02lld:%02lld.%06lld+00:00", static_cast<long long>(y),
                static_cast<long long>(m), static_cast<long long>(d), static_cast<long long>(secs / 3600),
                static_cast<long long>(secs / 60 % 60), static_cast<long long>(secs % 60),
                static_cast<long long>(frac));
  return buf;
}

std::variant<XLogData, Keepalive> parse_copy_data(std::string_view data) {
  if (data.empty()) throw ProtocolError("replication CopyData: empty message");
  char tag = data[0];
  data.remove_prefix(1);
  if (tag == 'w') {
    Reader r(data, "replication XLogData");
    XLogData x;
    x.wal_start = r.u64("WAL start");
    x.wal_end = r.u64("WAL end");
    x.send_time = r.i64("send time");
    x.payload = r.rest();
    return x;
  }
  if (tag == 'k') {
    Reader r(data, "replication keepalive");
    Keepalive k;
    k.wal_end = r.u64("WAL end");
    k.send_time = r.i64("send time");
    k.reply_requested = r.u8("reply flag") != 0;
    r.finish();
    return k;
  }
  throw ProtocolError("replication CopyData: unknown message tag " +
                      std::to_string(static_cast<unsigned char>(tag)));
}

std::string standby_status_update(Lsn written, Lsn flushed, Lsn applied, std::int64_t now_pg_us,
                                  bool reply_requested) {
  std::string out;
  out.reserve(34);
  out.push_back('r');
  put64(out, written);
  put64(out, flushed);
  put64(out, applied);
  put64(out, static_cast<std::uint64_t>(now_pg_us));
  out.push_back(reply_requested ? 1 : 0);
  return out;
}

Message parse_message(std::string_view payload) {
  if (payload.empty()) throw ProtocolError("pgoutput: empty message");
  char tag = payload[0];
  payload.remove_prefix(1);
  switch (tag) {
    case 'B': {
      Reader r(payload, "pgoutput Begin");
      Begin m;
      m.final_lsn = r.u64("final LSN");
      if (m.final_lsn == 0) r.fail("final LSN not set");
      m.commit_time = r.i64("commit time");
      m.xid = r.u32("xid");
      r.finish();
      return m;
    }
    case 'C': {
      Reader r(payload, "pgoutput Commit");
      Commit m;
      m.flags = r.u8("flags");
      m.commit_lsn = r.u64("commit LSN");
      m.end_lsn = r.u64("end LSN");
      m.commit_time = r.i64("commit time");
      r.finish();
      return m;
    }
    case 'O': {
      Reader r(payload, "pgoutput Origin");
      Origin m;
      m.lsn = r.u64("origin LSN");
      m.name = r.cstring("origin name");
      r.finish();
      return m;
    }
    case 'R': {
      Reader r(payload, "pgoutput Relation");
      Relation m = read_relation(r);
      r.finish();
      return m;
    }
    case 'Y': {
      Reader r(payload, "pgoutput Type");
      Type m;
      m.oid = r.u32("type oid");
      m.schema = r.cstring("schema");
      m.name = r.cstring("name");
      r.finish();
      return m;
    }
    case 'I': {
      Reader r(payload, "pgoutput Insert");
      Insert m;
      m.relid = r.u32("relation oid");
      char kind = static_cast<char>(r.u8("tuple kind"));
      if (kind != 'N') r.fail("expected new tuple 'N', got byte " + std::to_string(static_cast<unsigned char>(kind)));
      m.row = read_tuple(r);
      r.finish();
      return m;
    }
    case 'U': {
      Reader r(payload, "pgoutput Update");
      Update m = read_update(r);
      r.finish();
      return m;
    }
    case 'D': {
      Reader r(payload, "pgoutput Delete");
      Delete m;
      m.relid = r.u32("relation oid");
      char kind = static_cast<char>(r.u8("tuple kind"));
      if (kind != 'K' && kind != 'O')
        r.fail("expected old tuple 'K' or 'O', got byte " + std::to_string(static_cast<unsigned char>(kind)));
      m.old_kind = kind;
      m.old = read_tuple(r);
      r.finish();
      return m;
    }
    case 'T': {
      Reader r(payload, "pgoutput Truncate");
      Truncate m = read_truncate(r);
      r.finish();
      return m;
    }
    case 'M': {
      Reader r(payload, "pgoutput Message");
      LogicalMessage m;
      m.transactional = (r.u8("flags") & 1) != 0;
      m.lsn = r.u64("LSN");
      m.prefix = r.cstring("prefix");
      std::int32_t len = r.i32("content length");
      if (len < 0) r.fail("negative content length " + std::to_string(len));
      m.content = std::string(r.take(static_cast<std::size_t>(len), "content"));
      r.finish();
      return m;
    }
    case 'S':
    case 'E':
    case 'c':
    case 'A':
      throw ProtocolError(std::string("pgoutput: message '") + tag +
                          "': streamed transactions are not requested");
    case 'b':
    case 'P':
    case 'K':
    case 'r':
    case 'p':
      throw ProtocolError(std::string("pgoutput: message '") + tag +
                          "': two-phase transactions are not requested");
    default:
      throw ProtocolError("pgoutput: unknown message tag " + std::to_string(static_cast<unsigned char>(tag)));
  }
}

}  // namespace pgfanout::pgoutput
