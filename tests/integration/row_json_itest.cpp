// The logical capture's values against the server's own to_jsonb (issues 13 and 15): a
// table with a column of every kind of type, tricky rows, each column's text output read
// under the walsender's pinned settings (kPinnedSettings), its shape loaded through
// TypeCatalog, converted by row_json, and compared on the server: `$1::jsonb =
// to_jsonb(col)` for every value, or the text form where to_jsonb would run a cast to json
// somebody made (hstore, PostGIS, a table owner's enum).

#include <gtest/gtest.h>

#include <cctype>
#include <cstdio>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include <pqxx/pqxx>

#include "harness.hpp"
#include "pgfanout/pg_connection.hpp"
#include "row_json.hpp"
#include "type_catalog.hpp"

namespace pgfanout::test {
namespace {

using Kind = TypeShape::Kind;

// A role that is not a superuser, dropped on destruction. Declare it before the database
// it owns objects in: the database is dropped first, and with it the role's objects.
class TestRole {
 public:
  explicit TestRole(std::string_view prefix) : name_(unique_name(prefix)) {
    PgSession(pg_admin_conninfo()).exec("CREATE ROLE " + quote_ident(name_) + " NOLOGIN");
  }
  ~TestRole() {
    try {
      PgSession(pg_admin_conninfo()).exec("DROP ROLE IF EXISTS " + quote_ident(name_));
    } catch (const std::exception& e) {
      std::cerr << "row_json_itest: could not drop role " << name_ << ": " << e.what() << "\n";
    }
  }
  TestRole(const TestRole&) = delete;
  TestRole& operator=(const TestRole&) = delete;
  std::string ident() const { return quote_ident(name_); }

 private:
  std::string name_;
};

// `conninfo` with libpq's `options` set to kPinnedSettings, as the walsender session runs.
std::string pinned(const std::string& conninfo) {
  if (conninfo.starts_with("postgresql://") || conninfo.starts_with("postgres://")) {
    std::string encoded;
    for (unsigned char c : kPinnedSettings) {
      if (std::isalnum(c) || c == '-' || c == '_' || c == '.') {
        encoded += static_cast<char>(c);
      } else {
        char hex[4];
        std::snprintf(hex, sizeof hex, "%%%02X", c);
        encoded += hex;
      }
    }
    return conninfo + (conninfo.find('?') == std::string::npos ? "?" : "&") + "options=" + encoded;
  }
  return conninfo + " options='" + std::string(kPinnedSettings) + "'";
}

struct Column {
  std::string name;
  std::uint32_t type_oid;
};

std::vector<Column> columns_of(pqxx::connection& conn, const std::string& table) {
  pqxx::nontransaction tx(conn);
  std::vector<Column> columns;
  for (const auto& row : tx.exec_params(
           "SELECT attname, atttypid FROM pg_catalog.pg_attribute WHERE attrelid = $1::regclass "
           "AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
           table)) {
    columns.push_back({row[0].as<std::string>(), row[1].as<std::uint32_t>()});
  }
  return columns;
}

// For every non-null value of `table` (key `id`), what the logical capture would send
// compared with `reference` (to_jsonb of the column unless given) on the pinned session.
// Returns how many values were compared.
int expect_values_match(pqxx::connection& conn, TypeCatalog& catalog, const std::string& table,
                        const std::map<std::string, std::string>& reference = {}) {
  int compared = 0;
  auto columns = columns_of(conn, table);
  pqxx::result rows;
  {
    pqxx::nontransaction tx(conn);
    rows = tx.exec("SELECT * FROM " + table + " ORDER BY id");
  }
  for (const auto& row : rows) {
    const std::string id = row[0].as<std::string>();
    for (std::size_t c = 0; c < columns.size(); ++c) {
      if (row[int(c)].is_null()) continue;
      const std::string& name = columns[c].name;
      const std::string text(row[int(c)].c_str(), row[int(c)].size());
      auto shape = catalog.shape(columns[c].type_oid);
      std::string json;
      try {
        append_value_json(json, *shape, text);
      } catch (const std::exception& e) {
        ADD_FAILURE() << name << " of row " << id << ": " << e.what();
        continue;
      }
      std::string expected = "to_jsonb(" + quote_ident(name) + ")";
      if (auto given = reference.find(name); given != reference.end()) {
        expected = given->second;
      } else if (shape->kind == Kind::TextForm) {
        expected = "to_jsonb(" + quote_ident(name) + "::text)";
      } else {
        EXPECT_FALSE(holds_text_form(*shape)) << name << " needs a reference expression";
      }
      pqxx::nontransaction tx(conn);
      auto check = tx.exec_params1("SELECT $1::jsonb = " + expected + ", " + expected + "::text FROM " + table +
                                       " WHERE id = $2",
                                   json, id);
      EXPECT_TRUE(check[0].as<bool>()) << name << " of row " << id << ": text " << text << "\n  sent     " << json
                                       << "\n  expected " << check[1].as<std::string>();
      ++compared;
    }
  }
  return compared;
}

TEST(RowJson, EveryKindOfColumnMeansWhatToJsonbGives) {
  TestRole owner("rowjson_owner");
  ScratchDatabase db("pgft_rowjson");
  PgSession admin = db.session();
  admin.exec("CREATE EXTENSION hstore; CREATE EXTENSION postgis");
  // A table owner's enum with a cast to json of its own: to_jsonb would run its function.
  admin.exec("CREATE SCHEMA owned AUTHORIZATION " + owner.ident());
  admin.exec("BEGIN; SET LOCAL ROLE " + owner.ident() +
             ";"
             "CREATE TYPE owned.mood AS ENUM ('happy', 'sad, \"very\"');"
             "CREATE FUNCTION owned.mood_json(owned.mood) RETURNS json LANGUAGE sql"
             "  AS $$ SELECT pg_catalog.json_build_object('mood', $1::text) $$;"
             "CREATE CAST (owned.mood AS json) WITH FUNCTION owned.mood_json(owned.mood);"
             "COMMIT");
  admin.exec(R"sql(
    CREATE TYPE color AS ENUM ('red', 'with space');
    CREATE TYPE pair AS (n int, gone text, s text, t text);
    ALTER TYPE pair DROP ATTRIBUTE gone;
    CREATE TYPE nest AS (p pair, tags text[], d date, ps pair[]);
    CREATE TYPE withh AS (k int, h hstore);
    CREATE DOMAIN dint AS int CHECK (VALUE > 0);
    CREATE DOMAIN ddint AS dint CHECK (VALUE < 100);
    CREATE DOMAIN dtexts AS text[];
    CREATE DOMAIN dpair AS pair;
    CREATE DOMAIN dtz AS timestamptz;
    CREATE DOMAIN djson AS jsonb;
    CREATE DOMAIN dh AS hstore;
    CREATE TYPE odd AS ("we""ird, (name)" text, "é" int, " " int[]);
    CREATE TABLE t (
      id int PRIMARY KEY,
      b bool, i2 int2, i4 int4, i8 int8, n numeric, f4 float4, f8 float8,
      tx text, vc varchar(10), ch char(3), nm name, u uuid, ip inet, m money, iv interval, by bytea,
      col color, mood owned.mood, r int4range, tr tstzrange, mr int4multirange, nr numrange,
      j json, jb jsonb, d date, ts timestamp, tz timestamptz,
      ai int[], a2 int[], at text[], abox box[], aj json[], an numeric[], ats timestamptz[], ab bool[],
      amood owned.mood[], acol color[],
      c pair, ne nest, ac pair[],
      h hstore, ah hstore[], wh withh, awh withh[], g geometry(Point, 4326), gg geography, v2 int2vector, vo oidvector,
      di dint, ddi ddint, dt dtexts, dp dpair, dz dtz, dj djson, adi dint[], adp dpair[],
      tm time, ttz timetz, bt bit(4), vb varbit, x xml, tv tsvector, tq tsquery, pt point, mac macaddr,
      cc "char", o oid, ci circle, pa path, pg polygon, apt point[], atm timetz[], dhs dh, od odd
    );
    INSERT INTO t (id, b, i2, i4, i8, n, f4, f8, tx, vc, ch, nm, u, ip, m, iv, by, col, mood, r, tr, mr, nr,
                   j, jb, d, ts, tz, ai, a2, at, abox, aj, an, ats, ab, amood, acol, c, ne, ac,
                   h, ah, wh, awh, g, gg, v2, vo, di, ddi, dt, dp, dz, dj, adi, adp) VALUES
    (1, true, -32768, 2147483647, -9223372036854775808, 1.50, 1.1, 0.1,
     'plain', 'v', 'a', 'name', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '10.0.0.0/8', 12.34,
     '1 year 2 mons -3 days 04:05:06.789', '\x00ff', 'red', 'happy', '[1,5)',
     '[2024-01-01 00:00+00,infinity)', '{[1,3), [5,7)}', '(,1.5]',
     '{"b": 1, "a": [1, 2.50], "a": "dup"}', '{"x": {"y": [null, true, 1.0, "s"]}}',
     '2024-02-29', '2024-01-02 03:04:05.123456', '2024-06-01 12:00:00-07',
     '[0:1]={5,6}', '{{1,2},{3,4}}', ARRAY['', NULL, 'NULL', 'a,b', 'q"q', 'b\s', '{x}', ' sp ', 'null', 'é€𝄞'],
     ARRAY['(1,1),(0,0)'::box, '(2,2),(1,1)'], ARRAY['{"a": 1}'::json, NULL, '[1, 2]'],
     '{NaN,Infinity,-Infinity,1e-7,NULL}', ARRAY['0044-03-15 10:00 BC'::timestamptz, 'infinity'], '{t,f,NULL}',
     ARRAY['happy', NULL, 'sad, "very"']::owned.mood[], '{red,"with space"}',
     ROW(1, 'a,b', NULL), ROW(ROW(1, 'x', NULL)::pair, ARRAY['a', NULL], '0001-01-01 BC',
                              ARRAY[ROW(2, '"', '')::pair, NULL]),
     ARRAY[ROW(1, 'a', NULL)::pair, NULL, ROW(NULL, NULL, NULL)::pair],
     '"a"=>"1", "b"=>NULL, "c\"q"=>"x y"', ARRAY['a=>1'::hstore, NULL, ''], ROW(1, 'k=>v, "q\"" => "(,)"'),
     ARRAY[ROW(2, 'x=>"y,z"')::withh, NULL], 'SRID=4326;POINT(1 2)', 'POINT(3 4)', '1 -2 3', '26 4294967295',
     5, 7, '{x,NULL}', ROW(3, 'd', ''), '2000-01-01 00:00+05', '[1, {"k": null}]', ARRAY[1, 2]::dint[],
     ARRAY[ROW(4, NULL, 'e')::dpair]),
    (2, false, 0, 0, 0, 'NaN', 'NaN', 'NaN',
     E'line\nbreak\t"quoted" \\ back', '', '', '', '00000000-0000-0000-0000-000000000000', '::1/128', -0.01,
     '-178000000 years', '', 'with space', 'sad, "very"', 'empty', 'empty', '{}', 'empty',
     '  "str\u00e9"  ', '[]', '0044-03-15 BC', '4713-01-01 00:00 BC', '0044-03-15 10:00:00.5+03 BC',
     '{}', '[-1:0][2:3]={{1,NULL},{NULL,4}}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}',
     ROW(NULL, '', '"'), ROW(NULL, NULL, NULL, '{}'), '{}',
     '', '{}', ROW(NULL, NULL), '{}', 'SRID=4326;POINT(5 6)', 'SRID=4326;POINT(-1 -2)', '', '',
     1, 99, '{}', ROW(NULL, NULL, NULL), '-infinity', '"s"', '{}', '{}');
    INSERT INTO t (id, i8, n, f4, f8, tx, j, jb, d, ts, tz, ai, c) VALUES
    (3, 9223372036854775807, 'Infinity', 'Infinity', 'Infinity', '(,)',
     '{"k": "\ud83d\ude00", "n": 1e400, "e": -0.0E-5}', '{"deep": [[[[{}]]]]}',
     'infinity', 'infinity', 'infinity', '{1,NULL,3}', ROW(2, E'x"y\\z', 'a(b)c'));
    INSERT INTO t (id, n, f4, f8, d, ts, tz) VALUES
    (4, '-Infinity', '-Infinity', '-Infinity', '-infinity', '294276-12-31 23:59:59.999999',
     '12345-06-07 01:02:03.000001+00'),
    (5, 123456789012345678901234567890.123456789, 3.4e38, 1e308, '5874897-12-31', '-infinity',
     '1900-01-01 00:00:00+05:17:30');
    INSERT INTO t (id, n, f4, f8) VALUES (6, -0.0000001, 1e-45, 5e-324), (7, 0, '-0', '-0');
    INSERT INTO t (id, tm, ttz, bt, vb, x, tv, tq, pt, mac, cc, o, ci, pa, pg, apt, atm, dhs, od) VALUES
    (8, '23:59:59.999999', '12:00+05:30', B'1010', B'', '<a x="1">&amp;</a>', 'a:1 b''c:2,3',
     'a & !(b | c)', '(1.5,-2)', '08:00:2b:01:02:03', '"', 4294967295, '<(0,0),1>', '[(0,0),(1,1)]',
     '((0,0),(1,0),(0,1))', ARRAY['(1,2)'::point, NULL], '{24:00:00-15:59,00:00:00+01:02:03}',
     'a=>b', ROW('x', 1, '{2}'));
  )sql");

  pqxx::connection conn(pinned(db.conninfo()));
  TypeCatalog catalog(conn);
  // The shapes the catalog read are jsonb_categorize_type's.
  std::map<std::string, std::uint32_t> oids;
  for (const auto& column : columns_of(conn, "public.t")) oids[column.name] = column.type_oid;
  EXPECT_EQ(catalog.shape(oids.at("h"))->kind, Kind::TextForm);
  EXPECT_EQ(catalog.shape(oids.at("g"))->kind, Kind::TextForm);
  // PostGIS casts geometry to json, not geography: to_jsonb gives geography's text.
  EXPECT_EQ(catalog.shape(oids.at("gg"))->kind, Kind::String);
  EXPECT_EQ(catalog.shape(oids.at("mood"))->kind, Kind::TextForm);
  EXPECT_EQ(catalog.shape(oids.at("col"))->kind, Kind::String);
  EXPECT_EQ(catalog.shape(oids.at("ddi"))->kind, Kind::Number);
  EXPECT_EQ(catalog.shape(oids.at("dhs"))->kind, Kind::TextForm);  // a domain over a type with a cast
  EXPECT_EQ(catalog.shape(oids.at("abox"))->delimiter, ';');
  auto dp = catalog.shape(oids.at("dp"));
  ASSERT_EQ(dp->kind, Kind::Composite);
  ASSERT_EQ(dp->fields.size(), 3u);  // the dropped attribute is not one
  EXPECT_EQ(dp->fields[1].first, "s");
  EXPECT_TRUE(holds_text_form(*catalog.shape(oids.at("awh"))));
  EXPECT_FALSE(holds_text_form(*catalog.shape(oids.at("ne"))));
  // The owner's cast is what to_jsonb would have run.
  EXPECT_EQ(admin.value("SELECT to_jsonb('happy'::owned.mood)::text"), "{\"mood\": \"happy\"}");

  // Where a text form sits inside an array or a composite, the reference replaces it
  // with its text.
  const std::map<std::string, std::string> reference{
      {"amood", "to_jsonb(amood::text[])"},
      {"dhs", "to_jsonb(dhs::text)"},
      {"ah", "to_jsonb(ah::text[])"},
      {"wh", "jsonb_build_object('k', (wh).k, 'h', (wh).h::text)"},
      {"awh",
       "COALESCE((SELECT jsonb_agg(CASE WHEN awh[o] IS NULL THEN NULL ELSE jsonb_build_object('k', (awh[o]).k, "
       "'h', (awh[o]).h::text) END ORDER BY o) FROM generate_subscripts(awh, 1) AS o), '[]')"},
  };
  int compared = expect_values_match(conn, catalog, "public.t", reference);
  EXPECT_EQ(compared, 168);  // every value that is not NULL, the ids included
}

TEST(RowJson, TheCatalogKeepsAShapeUntilToldToForget) {
  ScratchDatabase db("pgft_rowjson");
  PgSession admin = db.session();
  admin.exec("CREATE TYPE p AS (a int); CREATE DOMAIN d1 AS p; CREATE DOMAIN d2 AS d1");
  pqxx::connection conn(pinned(db.conninfo()));
  TypeCatalog catalog(conn);
  auto oid = [&](const char* type) {
    return static_cast<std::uint32_t>(std::stoul(*admin.value(std::string("SELECT '") + type + "'::regtype::oid")));
  };
  auto before = catalog.shape(oid("d2"));
  ASSERT_EQ(before->kind, Kind::Composite);
  EXPECT_EQ(before->fields.size(), 1u);

  admin.exec("ALTER TYPE p ADD ATTRIBUTE b text");
  EXPECT_EQ(catalog.shape(oid("d2")), before);  // the same shape: nothing was read again
  catalog.forget_all();
  auto after = catalog.shape(oid("d2"));
  ASSERT_EQ(after->fields.size(), 2u);
  EXPECT_EQ(after->fields[1].first, "b");
  EXPECT_EQ(before->fields.size(), 1u);  // what a caller held is intact
  std::string json;
  append_value_json(json, *after, "(1,x)");
  EXPECT_EQ(json, R"({"a":1,"b":"x"})");

  EXPECT_THROW(catalog.shape(0), std::runtime_error);
  EXPECT_THROW(catalog.shape(4294967295u), std::runtime_error);
}

// A logical replication slot of `db`, dropped on destruction (before the database is:
// declare it after the ScratchDatabase).
class DecodingSlot {
 public:
  explicit DecodingSlot(const ScratchDatabase& db) : session_(db.session()), name_(unique_name("rowjson_slot")) {
    session_.exec("SELECT pg_create_logical_replication_slot('" + name_ + "', 'test_decoding')");
  }
  ~DecodingSlot() {
    try {
      session_.exec("SELECT pg_drop_replication_slot('" + name_ + "')");
    } catch (const std::exception& e) {
      std::cerr << "row_json_itest: could not drop slot " << name_ << ": " << e.what() << "\n";
    }
  }
  DecodingSlot(const DecodingSlot&) = delete;
  DecodingSlot& operator=(const DecodingSlot&) = delete;
  /// The rows test_decoding wrote for the changes since the last call.
  std::vector<std::string> changes() {
    std::vector<std::string> out;
    for (const auto& row : session_.query("SELECT data FROM pg_logical_slot_get_changes('" + name_ +
                                          "', NULL, NULL) WHERE data LIKE 'table %'")) {
      out.push_back(*row[0]);
    }
    return out;
  }

 private:
  PgSession session_;
  std::string name_;
};

// The text test_decoding gives for column `column` of type `type` in `line`, which holds no
// single quote.
std::string decoded_text(const std::string& line, const std::string& column, const std::string& type) {
  const std::string marker = " " + column + "[" + type + "]:'";
  auto start = line.find(marker);
  if (start == std::string::npos) throw HarnessError("no " + column + " in " + line);
  start += marker.size();
  return line.substr(start, line.find('\'', start) - start);
}

// The walsender writes a value with its type as it was when the change was written; the
// catalog is read later. An attribute added in between reads as null, as to_jsonb of the
// stored value now gives it.
TEST(RowJson, ACompositeDecodedAfterItsTypeGrewReadsTheNewAttributeAsNull) {
  ScratchDatabase db("pgft_rowjson");
  PgSession admin = db.session();
  admin.exec("CREATE TYPE ptest AS (a int, c text); CREATE TABLE tt (id int PRIMARY KEY, x ptest, y ptest[])");
  DecodingSlot slot(db);
  admin.exec("INSERT INTO tt VALUES (1, ROW(1, 'q'), ARRAY[ROW(2, 'w')::ptest]);"
             "ALTER TYPE ptest ADD ATTRIBUTE b text");
  auto changes = slot.changes();
  ASSERT_EQ(changes.size(), 1u);
  const std::string x = decoded_text(changes[0], "x", "ptest");
  const std::string y = decoded_text(changes[0], "y", "ptest[]");
  EXPECT_EQ(x, "(1,q)");  // the type as it was

  pqxx::connection conn(pinned(db.conninfo()));
  TypeCatalog catalog(conn);
  auto columns = columns_of(conn, "public.tt");
  for (const auto& [column, text] : {std::pair{columns[1], x}, std::pair{columns[2], y}}) {
    std::string json;
    append_value_json(json, *catalog.shape(column.type_oid), text);
    pqxx::nontransaction tx(conn);
    auto check = tx.exec_params1("SELECT $1::jsonb = to_jsonb(" + quote_ident(column.name) + "), to_jsonb(" +
                                     quote_ident(column.name) + ")::text FROM tt WHERE id = 1",
                                 json);
    EXPECT_TRUE(check[0].as<bool>()) << column.name << ": sent " << json << ", to_jsonb " << check[1].c_str();
  }
}

// Found by review, all passing: edge values of many types (float and numeric limits, BC
// and 5-digit years, ranges and multiranges, enum labels that need quoting, composites
// with json and arrays, a dropped attribute, domains over arrays and composites, six
// dimensions, vectors, network and geometric types, bytea, json and jsonb) mean what the
// server's own to_jsonb gives.
TEST(RowJson, EdgeValuesMeanWhatToJsonbGives) {
  ScratchDatabase db("pgft_rowjson");
  PgSession admin = db.session();
  admin.exec(R"sql(
    CREATE TYPE lab AS ENUM ('a"b', 'c,d', 'e\f', '{g}', 'NULL', ' ', '(x)', 'null');
    CREATE TYPE inner1 AS (j json, jb jsonb, a int[], t text);
    CREATE TYPE outer1 AS (i inner1, ai inner1[], l lab, la lab[]);
    CREATE TYPE empt AS ();
    CREATE TYPE grow AS (a int, gone int, b text);
    ALTER TYPE grow DROP ATTRIBUTE gone;
    CREATE DOMAIN dia AS int[];
    CREATE DOMAIN dcomp AS inner1;
    CREATE TYPE vecs AS (v int2vector, o oidvector);
    CREATE TABLE rowt (k int, s text);
    CREATE TYPE textrange AS RANGE (subtype = text);
    CREATE TABLE e (
      id int PRIMARY KEY,
      f4 float4, f8 float8, n numeric, m money, bt bit(5), vb varbit, iv interval, tm time, ttz timetz,
      ts timestamp, tz timestamptz, d date, tsr tsrange, dr daterange, nr numrange, i8r int8range, txr textrange,
      tzmr tstzmultirange, dmr datemultirange, ar int4range[], amr int4multirange[], o1 outer1, ao1 outer1[],
      em empt, aem empt[], gr grow, adia dia[], dd dia, adc dcomp[], ll lab, al lab[], a6 int[], v vecs, av int2vector[],
      x xml, tv tsvector, cid cidr, inet1 inet, m8 macaddr8, u uuid, o oid, rc regclass, rt regtype, rp regproc,
      bpc char(5), ach char(3)[], qc "char", nm name, an name[], by bytea, aby bytea[], j json, jb jsonb, aj jsonb[],
      lsn pg_lsn, sn pg_snapshot, ln line, ls lseg, bx box, rw rowt, arw rowt[], atx text[], apt point[], ajs json[]
    );
  )sql");
  admin.exec(R"sql(
    INSERT INTO e (id, f4, f8, n, m, bt, vb, iv, tm, ttz, ts, tz, d) VALUES
      (1, 1.17549435e-38, 2.2250738585072014e-308, 1e-1000, '-92233720368547758.08', B'10101', B'', '1 day -00:00:00.000001',
       '24:00:00', '00:00:00+15:59', '4713-01-01 00:00:00 BC', '4714-11-24 00:00:00+00 BC', '4714-11-24 BC'),
      (2, 3.4028235e38, 1.7976931348623157e308, 9.99e999, '92233720368547758.07', B'00000', repeat('1', 100)::varbit,
       '-1 mons +1 day -1:00', '00:00:00.000001', '12:00:00.25-00:00:01', '0001-01-01 00:00:00.5 BC', '294276-12-31 23:59:59.999999+00',
       '5874897-12-31'),
      (3, 1e15, 1e16, -0.000, 0, NULL, NULL, '178000000 years 1 mon 1 day 0.000001 sec', NULL, '23:59:59.999999-15:59',
       '1999-12-31 23:59:59.000001', '2000-01-01 00:00:00.1+00', '0001-01-01'),
      (4, 1e-45, 4.9e-324, 1.50000, NULL, NULL, NULL, '-178000000 years', NULL, NULL, '10000-01-01 00:00', '0099-01-01 00:00+00 BC', '10000-02-29'),
      (5, 123456.7, 0.30000000000000004, 12345678901234567890123456789012345678901234567890, NULL, NULL, NULL, '0', NULL, NULL,
       'infinity', '-infinity', '-infinity'),
      (6, 1.0e10, 1.2345678901234567e17, 'NaN', NULL, NULL, NULL, '-0.5 sec', NULL, NULL, NULL, NULL, NULL);
    INSERT INTO e (id, tsr, dr, nr, i8r, txr, tzmr, dmr, ar, amr) VALUES
      (10, '["2024-01-01 00:00","2024-01-02 00:00:00.5")', '[2024-01-01,infinity)', '(-1.5,1e3]', '[-9223372036854775808,0)',
       '["a\"b","c,d")', '{["4713-01-01 00:00+00 BC",infinity), [2030-01-01,2031-01-01)}', '{[-infinity,2020-01-01)}',
       ARRAY['[1,2)'::int4range, 'empty', NULL, '(,)'], ARRAY['{}'::int4multirange, '{[1,2),[5,6)}']),
      (11, 'empty', 'empty', 'empty', '(,)', '(,"")', '{}', '{}', '{}', '{}');
    INSERT INTO e (id, o1, ao1, em, aem, gr) VALUES
      (20, ROW(ROW('{"a": [1, "x\"y"], "b": null}', '{"k": "v,w"}', '{1,NULL,3}', 'a,b"c\d')::inner1,
               ARRAY[ROW(NULL, NULL, NULL, NULL)::inner1, NULL, ROW('[]', 'null', '[0:0]={7}', '')::inner1],
               'a"b', ARRAY['a"b', 'c,d', 'e\f', '{g}', 'NULL', ' ', '(x)', 'null', NULL]::lab[]),
           ARRAY[ROW(NULL, NULL, 'NULL', '{}')::outer1, NULL], ROW(), ARRAY[ROW()::empt, NULL], ROW(1, 'x')),
      (21, ROW(NULL, NULL, NULL, NULL), '{}', NULL, '{}', ROW(NULL, NULL));
    INSERT INTO e (id, adia, dd, adc, ll, al, a6, v, av) VALUES
      (30, '{"{1,2}","{}",NULL,"{3}","[0:1]={4,5}"}', '[5:5]={9}',
       ARRAY[ROW('1', '2', '{}', 't')::inner1::dcomp, NULL]::dcomp[], '{g}', '{NULL,"NULL",null}',
       '{{{{{{1,2}}}}},{{{{{3,NULL}}}}}}', ROW('1 -2', '0 4294967295'), ARRAY['1 2'::int2vector, '', NULL]),
      (31, '{}', '{}', '{}', 'null', '{}', '[-3:-3][0:1]={{1,2}}', ROW('', ''), '{}');
    INSERT INTO e (id, x, tv, cid, inet1, m8, u, o, rc, rt, rp, bpc, ach, qc, nm, an, by, aby, j, jb, aj) VALUES
      (40, E'<a>\n "q" &lt; </a>', E'''a b'':1A ''c\\\\d''', '10.0.0.0/8', '1.2.3.4', '08:00:2b:01:02:03:04:05',
       'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11', 4294967295, 'pg_class', 'timestamp with time zone', 'now',
       'a', ARRAY['a', NULL, 'bc '], E'\\377', E'n"m\\', ARRAY['a b', 'NULL'], E'\\x', ARRAY[E'\\x00'::bytea, NULL, ''],
       '{"a":"\u00e9\ud834\udd1e", "b": [1e5, -0, 0.0, 1E-3], "c": "\/"}', '{"s": "\u0001\t", "n": 1e-7}',
       ARRAY['{"a": 1}'::jsonb, 'null', NULL, '"NULL"', '[]']),
      (41, NULL, '', '::/0', '::ffff:1.2.3.4/128', NULL, NULL, 0, '-', '-', '-', '', '{}', '', '', '{}', '', '{}',
       '[]', '{}', '{}');
    INSERT INTO e (id, lsn, sn, ln, ls, bx, rw, arw, atx, apt, ajs) VALUES
      (50, 'FFFFFFFF/FFFFFFFF', '10:20:10,14,15', '{1,-1,0}', '[(0,0),(1,1)]', '(1,1),(0,0)', ROW(1, 'x'),
       ARRAY[ROW(1, 'a b')::rowt, ROW(NULL, NULL)::rowt], ARRAY[E'a\\b', '"', ' ', '', E'\t'],
       ARRAY['(1e300,-1e-300)'::point], ARRAY['  {"a" : 1}  '::json, '"x"', 'null', NULL]);
  )sql");
  pqxx::connection conn(pinned(db.conninfo()));
  TypeCatalog catalog(conn);
  EXPECT_EQ(expect_values_match(conn, catalog, "public.e"), 156);
}

TEST(RowJson, TimestamptzWrittenInAnotherZoneMeansTheSameInUtc) {
  ScratchDatabase db("pgft_rowjson");
  PgSession writer = db.session();
  writer.exec("SET TimeZone = 'Asia/Kathmandu'; SET DateStyle = 'SQL, DMY';"
              "CREATE TABLE z (id int PRIMARY KEY, tz timestamptz, atz timestamptz[]);"
              "INSERT INTO z VALUES (1, '01/06/2024 12:00:00', ARRAY['01/06/2024 12:00:00'::timestamptz]),"
              " (2, '01/01/1900 00:00', NULL), (3, '15/03/0044 10:00 BC', NULL), (4, 'infinity', NULL)");
  pqxx::connection conn(pinned(db.conninfo()));
  TypeCatalog catalog(conn);
  EXPECT_EQ(expect_values_match(conn, catalog, "public.z"), 9);

  // In the writer's zone, what the capture sends is the same instant as to_jsonb's there,
  // though not the same text.
  auto shape = catalog.shape(columns_of(conn, "public.z")[1].type_oid);
  pqxx::nontransaction read(conn);
  for (const auto& row : read.exec("SELECT id, tz FROM z WHERE tz <> 'infinity' ORDER BY id")) {
    std::string json;
    append_value_json(json, *shape, row[1].c_str());
    auto same = writer.value("SELECT (" + conn.quote(json) +
                             "::jsonb #>> '{}')::timestamptz = tz FROM z WHERE id = " + row[0].as<std::string>());
    EXPECT_EQ(same, "t") << json;
  }
  auto in_writer_zone = writer.value("SELECT to_jsonb(tz)::text FROM z WHERE id = 1");
  std::string json;
  append_value_json(json, *shape, read.exec("SELECT tz FROM z WHERE id = 1")[0][0].c_str());
  EXPECT_EQ(json, "\"2024-06-01T06:15:00+00:00\"");
  EXPECT_EQ(in_writer_zone, "\"2024-06-01T12:00:00+05:45\"");
}

}  // namespace
}  // namespace pgfanout::test
