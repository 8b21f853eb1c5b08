#include "pgoutput.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <string>
#include <variant>
#include <vector>

namespace pgfanout::pgoutput {
namespace {

using namespace std::string_literals;

// Builds protocol bytes by hand, big-endian as the server sends them, so that the tests
// say the wire format independently of the decoder.
struct Bytes {
  std::string s;
  Bytes& u8(unsigned v) {
    s.push_back(static_cast<char>(v));
    return *this;
  }
  Bytes& be(std::uint64_t v, int n) {
    for (int i = n - 1; i >= 0; --i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
    return *this;
  }
  Bytes& u16(std::uint16_t v) { return be(v, 2); }
  Bytes& u32(std::uint32_t v) { return be(v, 4); }
  Bytes& u64(std::uint64_t v) { return be(v, 8); }
  Bytes& str(const std::string& v) {  // NUL-terminated
    s += v;
    s.push_back('\0');
    return *this;
  }
  Bytes& raw(const std::string& v) {
    s += v;
    return *this;
  }
  Bytes& text(const std::string& v) { return u8('t').u32(static_cast<std::uint32_t>(v.size())).raw(v); }
  operator std::string() const { return s; }
  operator std::string_view() const { return s; }
};

template <class T>
T parse_as(const std::string& bytes) {
  Message m = parse_message(bytes);
  EXPECT_TRUE(std::holds_alternative<T>(m)) << "variant index " << m.index();
  return std::get<T>(m);
}

Value text(std::string v) { return {ValueKind::Text, std::move(v)}; }
Value null() { return {ValueKind::Null, {}}; }
Value unchanged() { return {ValueKind::Unchanged, {}}; }

std::string begin_bytes() { return Bytes{}.u8('B').u64(0x16B374D848).u64(848553519123456).u32(4000000000u); }
std::string commit_bytes() {
  return Bytes{}.u8('C').u8(0).u64(0x16B374D848).u64(0x16B374D900).u64(848553519123456);
}
std::string origin_bytes() { return Bytes{}.u8('O').u64(0x1234).str("node_a"); }
std::string relation_bytes() {
  return Bytes{}
      .u8('R')
      .u32(16384)
      .str("public")
      .str("orders")
      .u8('f')
      .u16(3)
      .u8(1).str("id").u32(20).u32(0xffffffff)
      .u8(0).str("price").u32(1700).u32((10 << 16 | 2) + 4)
      .u8(0).str("").u32(25).u32(0xffffffff);
}
std::string type_bytes() { return Bytes{}.u8('Y').u32(70000).str("app").str("mood"); }
std::string insert_bytes() {
  return Bytes{}.u8('I').u32(16384).u8('N').u16(4).text("42").u8('n').u8('u').text("with\0nul"s);
}
std::string update_key_bytes() {
  return Bytes{}.u8('U').u32(16384).u8('K').u16(2).text("41").u8('n').u8('N').u16(2).text("42").u8('u');
}
std::string update_full_bytes() {
  return Bytes{}.u8('U').u32(7).u8('O').u16(1).text("old").u8('N').u16(1).text("");
}
std::string update_bytes() { return Bytes{}.u8('U').u32(7).u8('N').u16(2).text("1").u8('n'); }
std::string delete_bytes() { return Bytes{}.u8('D').u32(7).u8('O').u16(2).text("1").u8('n'); }
std::string truncate_bytes() { return Bytes{}.u8('T').u32(2).u8(3).u32(16384).u32(16390); }
std::string message_bytes() { return Bytes{}.u8('M').u8(1).u64(0xABCDEF).str("pgfanout").u32(3).raw("a\0b"s); }

std::vector<std::string> valid_messages() {
  return {begin_bytes(),       commit_bytes(),  origin_bytes(), relation_bytes(), type_bytes(),
          insert_bytes(),      update_key_bytes(), update_full_bytes(), update_bytes(), delete_bytes(),
          truncate_bytes(),    message_bytes()};
}

TEST(Pgoutput, Begin) {
  auto b = parse_as<Begin>(begin_bytes());
  EXPECT_EQ(b.final_lsn, 0x16B374D848u);
  EXPECT_EQ(b.commit_time, 848553519123456);
  EXPECT_EQ(b.xid, 4000000000u);
}

TEST(Pgoutput, BeginWithoutFinalLsnIsRefused) {
  EXPECT_THROW(parse_message(Bytes{}.u8('B').u64(0).u64(1).u32(1)), ProtocolError);
}

TEST(Pgoutput, Commit) {
  auto c = parse_as<Commit>(commit_bytes());
  EXPECT_EQ(c.flags, 0);
  EXPECT_EQ(c.commit_lsn, 0x16B374D848u);
  EXPECT_EQ(c.end_lsn, 0x16B374D900u);
  EXPECT_EQ(c.commit_time, 848553519123456);
}

TEST(Pgoutput, Origin) {
  auto o = parse_as<Origin>(origin_bytes());
  EXPECT_EQ(o.lsn, 0x1234u);
  EXPECT_EQ(o.name, "node_a");
}

TEST(Pgoutput, RelationWithKeyColumnsAndTypmods) {
  auto r = parse_as<Relation>(relation_bytes());
  EXPECT_EQ(r.oid, 16384u);
  EXPECT_EQ(r.schema, "public");
  EXPECT_EQ(r.name, "orders");
  EXPECT_EQ(r.replica_identity, 'f');
  EXPECT_EQ(r.columns, (std::vector<Column>{{true, "id", 20, -1},
                                            {false, "price", 1700, (10 << 16 | 2) + 4},
                                            {false, "", 25, -1}}));
}

TEST(Pgoutput, RelationOfPgCatalogHasAnEmptySchemaAndMayHaveNoColumns) {
  auto r = parse_as<Relation>(Bytes{}.u8('R').u32(1).str("").str("t").u8('n').u16(0));
  EXPECT_EQ(r.schema, "");
  EXPECT_EQ(r.replica_identity, 'n');
  EXPECT_TRUE(r.columns.empty());
}

TEST(Pgoutput, RelationWithUnknownReplicaIdentityIsRefused) {
  EXPECT_THROW(parse_message(Bytes{}.u8('R').u32(1).str("s").str("t").u8('x').u16(0)), ProtocolError);
}

TEST(Pgoutput, Type) {
  auto t = parse_as<Type>(type_bytes());
  EXPECT_EQ(t.oid, 70000u);
  EXPECT_EQ(t.schema, "app");
  EXPECT_EQ(t.name, "mood");
}

TEST(Pgoutput, InsertWithTextNullUnchangedAndBinaryValues) {
  auto i = parse_as<Insert>(insert_bytes());
  EXPECT_EQ(i.relid, 16384u);
  EXPECT_EQ(i.row, (Tuple{text("42"), null(), unchanged(), text("with\0nul"s)}));

  auto b = parse_as<Insert>(Bytes{}.u8('I').u32(1).u8('N').u16(1).u8('b').u32(2).raw("\x00\xff"s));
  EXPECT_EQ(b.row, (Tuple{{ValueKind::Binary, "\x00\xff"s}}));
}

TEST(Pgoutput, InsertNeedsANewTuple) {
  EXPECT_THROW(parse_message(Bytes{}.u8('I').u32(1).u8('K').u16(0)), ProtocolError);
}

TEST(Pgoutput, UpdateWithOldKey) {
  auto u = parse_as<Update>(update_key_bytes());
  EXPECT_EQ(u.relid, 16384u);
  EXPECT_EQ(u.old_kind, 'K');
  EXPECT_EQ(u.old, (Tuple{text("41"), null()}));
  EXPECT_EQ(u.row, (Tuple{text("42"), unchanged()}));
}

TEST(Pgoutput, UpdateWithOldRow) {
  auto u = parse_as<Update>(update_full_bytes());
  EXPECT_EQ(u.old_kind, 'O');
  EXPECT_EQ(u.old, (Tuple{text("old")}));
  EXPECT_EQ(u.row, (Tuple{text("")}));
}

TEST(Pgoutput, UpdateWithoutOldTuple) {
  auto u = parse_as<Update>(update_bytes());
  EXPECT_EQ(u.old_kind, 0);
  EXPECT_TRUE(u.old.empty());
  EXPECT_EQ(u.row, (Tuple{text("1"), null()}));
}

TEST(Pgoutput, UpdateWithBadTupleKindsIsRefused) {
  EXPECT_THROW(parse_message(Bytes{}.u8('U').u32(1).u8('X').u16(0)), ProtocolError);
  // An old tuple must be followed by the new one, not by another old one.
  EXPECT_THROW(parse_message(Bytes{}.u8('U').u32(1).u8('K').u16(0).u8('O').u16(0)), ProtocolError);
}

TEST(Pgoutput, DeleteWithOldKeyOrOldRow) {
  auto d = parse_as<Delete>(delete_bytes());
  EXPECT_EQ(d.relid, 7u);
  EXPECT_EQ(d.old_kind, 'O');
  EXPECT_EQ(d.old, (Tuple{text("1"), null()}));
  auto k = parse_as<Delete>(Bytes{}.u8('D').u32(7).u8('K').u16(1).text("9"));
  EXPECT_EQ(k.old_kind, 'K');
  EXPECT_EQ(k.old, (Tuple{text("9")}));
  EXPECT_THROW(parse_message(Bytes{}.u8('D').u32(7).u8('N').u16(0)), ProtocolError);
}

TEST(Pgoutput, TruncateFlags) {
  auto t = parse_as<Truncate>(truncate_bytes());
  EXPECT_TRUE(t.cascade);
  EXPECT_TRUE(t.restart_identity);
  EXPECT_EQ(t.relids, (std::vector<std::uint32_t>{16384, 16390}));
  for (unsigned flags : {0u, 1u, 2u}) {
    auto f = parse_as<Truncate>(Bytes{}.u8('T').u32(1).u8(flags).u32(5));
    EXPECT_EQ(f.cascade, (flags & 1) != 0) << flags;
    EXPECT_EQ(f.restart_identity, (flags & 2) != 0) << flags;
    EXPECT_EQ(f.relids, (std::vector<std::uint32_t>{5}));
  }
}

TEST(Pgoutput, LogicalMessage) {
  auto m = parse_as<LogicalMessage>(message_bytes());
  EXPECT_TRUE(m.transactional);
  EXPECT_EQ(m.lsn, 0xABCDEFu);
  EXPECT_EQ(m.prefix, "pgfanout");
  EXPECT_EQ(m.content, "a\0b"s);
  auto n = parse_as<LogicalMessage>(Bytes{}.u8('M').u8(0).u64(1).str("p").u32(0));
  EXPECT_FALSE(n.transactional);
  EXPECT_EQ(n.content, "");
}

TEST(Pgoutput, StreamingAndTwoPhaseMessagesAreRefused) {
  for (char tag : {'S', 'E', 'c', 'A'}) {
    try {
      parse_message(Bytes{}.u8(tag).u32(1).u8(1));
      ADD_FAILURE() << tag;
    } catch (const ProtocolError& e) {
      EXPECT_NE(std::string(e.what()).find("streamed transactions are not requested"), std::string::npos)
          << e.what();
    }
  }
  for (char tag : {'b', 'P', 'K', 'r', 'p'}) EXPECT_THROW(parse_message(Bytes{}.u8(tag).u64(1)), ProtocolError) << tag;
}

TEST(Pgoutput, UnknownTagAndEmptyMessageAreRefused) {
  EXPECT_THROW(parse_message(""), ProtocolError);
  EXPECT_THROW(parse_message("Z"), ProtocolError);
  EXPECT_THROW(parse_message("\0"s), ProtocolError);
}

TEST(Pgoutput, BadTupleValueKindIsRefused) {
  try {
    parse_message(Bytes{}.u8('I').u32(1).u8('N').u16(2).u8('n').u8('x'));
    ADD_FAILURE();
  } catch (const ProtocolError& e) {
    EXPECT_NE(std::string(e.what()).find("value kind"), std::string::npos) << e.what();
  }
}

TEST(Pgoutput, EveryTruncatedPrefixOfAValidMessageIsRefused) {
  for (const std::string& m : valid_messages()) {
    ASSERT_NO_THROW(parse_message(m)) << "tag " << m[0];
    for (std::size_t n = 0; n < m.size(); ++n)
      EXPECT_THROW(parse_message(m.substr(0, n)), ProtocolError) << "tag " << m[0] << ", " << n << " bytes";
  }
}

TEST(Pgoutput, TrailingBytesAreRefused) {
  for (const std::string& m : valid_messages()) {
    EXPECT_THROW(parse_message(m + "x"), ProtocolError) << "tag " << m[0];
    EXPECT_THROW(parse_message(m + "\0"s), ProtocolError) << "tag " << m[0];
  }
}

// The refusal must come from the count check, before anything is reserved for the
// items, not from running out of bytes later (after a reserve the count sized).
void expect_count_refused(const std::string& bytes, const std::string& count) {
  try {
    parse_message(bytes);
    ADD_FAILURE() << "no error for " << count;
  } catch (const ProtocolError& e) {
    EXPECT_NE(std::string(e.what()).find(count + " does not fit"), std::string::npos) << e.what();
  }
}

TEST(Pgoutput, CountsTheBytesCannotHoldAreRefusedBeforeAllocating) {
  // 65535 columns with 3 bytes left.
  expect_count_refused(Bytes{}.u8('I').u32(1).u8('N').u16(0xffff).raw("nnn"), "column count 65535");
  expect_count_refused(Bytes{}.u8('U').u32(1).u8('K').u16(0xffff).raw("nnn"), "column count 65535");
  // A column of a Relation takes at least 10 bytes.
  expect_count_refused(Bytes{}.u8('R').u32(1).str("s").str("t").u8('d').u16(2).raw("123456789abcdefghij"),
                       "column count 2");
  expect_count_refused(Bytes{}.u8('T').u32(0xffffffff).u8(0).u32(1), "relation count 4294967295");
  expect_count_refused(Bytes{}.u8('T').u32(2).u8(0).u32(1).raw("abc"), "relation count 2");
  // Lengths of values and contents are checked before the bytes are copied.
  EXPECT_THROW(parse_message(Bytes{}.u8('I').u32(1).u8('N').u16(1).u8('t').u32(0x7fffffff).raw("ab")),
               ProtocolError);
  EXPECT_THROW(parse_message(Bytes{}.u8('I').u32(1).u8('N').u16(1).u8('t').u32(0xffffffff)), ProtocolError);
  EXPECT_THROW(parse_message(Bytes{}.u8('M').u8(0).u64(1).str("p").u32(0x7fffffff).raw("ab")), ProtocolError);
  EXPECT_THROW(parse_message(Bytes{}.u8('M').u8(0).u64(1).str("p").u32(0x80000000)), ProtocolError);
}

TEST(Pgoutput, StringsMustEndInsideTheMessage) {
  EXPECT_THROW(parse_message(Bytes{}.u8('O').u64(1).raw("no_nul")), ProtocolError);
  EXPECT_THROW(parse_message(Bytes{}.u8('Y').u32(1).str("s").raw("t")), ProtocolError);
}

TEST(Pgoutput, XLogDataCarriesItsPayload) {
  std::string payload = insert_bytes();
  std::string bytes = Bytes{}.u8('w').u64(0x100).u64(0x200).u64(848553519123456).raw(payload);
  auto x = std::get<XLogData>(parse_copy_data(bytes));
  EXPECT_EQ(x.wal_start, 0x100u);
  EXPECT_EQ(x.wal_end, 0x200u);
  EXPECT_EQ(x.send_time, 848553519123456);
  EXPECT_EQ(x.payload, payload);
  EXPECT_EQ(x.payload.data(), bytes.data() + 25);  // a view into the buffer, not a copy
  EXPECT_TRUE(std::get<XLogData>(parse_copy_data(Bytes{}.u8('w').u64(1).u64(2).u64(3))).payload.empty());
}

TEST(Pgoutput, KeepaliveWithAndWithoutReplyRequest) {
  auto k = std::get<Keepalive>(parse_copy_data(Bytes{}.u8('k').u64(0x16B374D848).u64(5).u8(1)));
  EXPECT_EQ(k.wal_end, 0x16B374D848u);
  EXPECT_EQ(k.send_time, 5);
  EXPECT_TRUE(k.reply_requested);
  EXPECT_FALSE(std::get<Keepalive>(parse_copy_data(Bytes{}.u8('k').u64(1).u64(5).u8(0))).reply_requested);
}

TEST(Pgoutput, MalformedCopyDataIsRefused) {
  std::string keepalive = Bytes{}.u8('k').u64(1).u64(5).u8(1);
  std::string xlog = Bytes{}.u8('w').u64(1).u64(2).u64(3);
  for (std::size_t n = 0; n < keepalive.size(); ++n)
    EXPECT_THROW(parse_copy_data(keepalive.substr(0, n)), ProtocolError) << n;
  for (std::size_t n = 0; n < xlog.size(); ++n) EXPECT_THROW(parse_copy_data(xlog.substr(0, n)), ProtocolError) << n;
  EXPECT_THROW(parse_copy_data(keepalive + "x"), ProtocolError);
  EXPECT_THROW(parse_copy_data(Bytes{}.u8('r').u64(1).u64(1).u64(1).u64(1).u8(0)), ProtocolError);
  EXPECT_THROW(parse_copy_data(""), ProtocolError);
}

TEST(Pgoutput, StandbyStatusUpdateLayout) {
  std::string expected = Bytes{}
                             .u8('r')
                             .u64(0x0102030405060708)
                             .u64(0x16B374D848)
                             .u64(0)
                             .u64(static_cast<std::uint64_t>(std::int64_t{-2}))
                             .u8(1);
  std::string got = standby_status_update(0x0102030405060708, 0x16B374D848, 0, -2, true);
  EXPECT_EQ(got.size(), 34u);
  EXPECT_EQ(got, expected);
  EXPECT_EQ(got.substr(0, 9), "r\x01\x02\x03\x04\x05\x06\x07\x08"s);
  EXPECT_EQ(standby_status_update(1, 2, 3, 4, false).back(), '\0');
}

TEST(Pgoutput, LsnTextRoundTrip) {
  EXPECT_EQ(format_lsn(0x16B374D848), "16/B374D848");
  EXPECT_EQ(format_lsn(0), "0/0");
  EXPECT_EQ(format_lsn(std::numeric_limits<Lsn>::max()), "FFFFFFFF/FFFFFFFF");
  EXPECT_EQ(format_lsn(0x100000000), "1/0");
  for (Lsn lsn : {Lsn{0}, Lsn{1}, Lsn{0x16B374D848}, Lsn{0xFFFFFFFF}, Lsn{0x100000000}, std::numeric_limits<Lsn>::max()})
    EXPECT_EQ(parse_lsn(format_lsn(lsn)), lsn);
  EXPECT_EQ(parse_lsn("16/b374d848"), Lsn{0x16B374D848});
  EXPECT_EQ(parse_lsn("00000016/0000000A"), Lsn{0x160000000A});
}

TEST(Pgoutput, BadLsnTextIsRefused) {
  for (const char* bad : {"", "/", "1/", "/1", "1", "123456789/0", "0/123456789", "1/2/3", "g/0", " 1/0", "1/0 ",
                          "+1/0", "-1/0", "1 /0", "0x1/0"})
    EXPECT_EQ(parse_lsn(bad), std::nullopt) << bad;
  EXPECT_EQ(parse_lsn("1\0/0"s), std::nullopt);
}

TEST(Pgoutput, IsoUtcAsTheOutboxTsIsSent) {
  EXPECT_EQ(iso_utc(848553519123456), "2026-11-21T05:18:39.123456+00:00");
  EXPECT_EQ(iso_utc(0), "2000-01-01T00:00:00.000000+00:00");
  EXPECT_EQ(iso_utc(-1), "1999-12-31T23:59:59.999999+00:00");
  EXPECT_EQ(iso_utc(762566399999999), "2024-02-29T23:59:59.999999+00:00");
  EXPECT_EQ(iso_utc(-63082281600000000), "0001-01-01T00:00:00.000000+00:00");
  // The day before is 1 BC, which to_char's YYYY prints as 0001 too.
  EXPECT_EQ(iso_utc(-63082281600000000 - 1), "0001-12-31T23:59:59.999999+00:00");
  EXPECT_EQ(iso_utc(std::numeric_limits<std::int64_t>::max()), "infinity");
  EXPECT_EQ(iso_utc(std::numeric_limits<std::int64_t>::min()), "-infinity");
  // Every other value prints without overflow.
  EXPECT_FALSE(iso_utc(std::numeric_limits<std::int64_t>::max() - 1).empty());
  EXPECT_FALSE(iso_utc(std::numeric_limits<std::int64_t>::min() + 1).empty());
}

TEST(Pgoutput, NowIsInThePostgresEpoch) {
  EXPECT_GT(pg_now_us(), 820540800000000);  // after 2026-01-01
  EXPECT_LT(pg_now_us(), 820540800000000 * 2);
}

}  // namespace
}  // namespace pgfanout::pgoutput
