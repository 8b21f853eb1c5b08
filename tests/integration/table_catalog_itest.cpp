// The listener's table catalog against a real replica: what a batch resolved stays valid
// while the batch uses it, whatever the catalog forgets meanwhile (issue 12: the batch
// held raw pointers to entries the catalog freed; run under PGFANOUT_SANITIZE=ON, the
// old code is a heap-use-after-free here).

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include "harness.hpp"
#include "table_catalog.hpp"

namespace pgfanout::test {
namespace {

using namespace std::chrono_literals;

TEST(TableCatalog, AnEntryOutlivesARereadForANewColumn) {
  ScratchDatabase db("pgft_catalog");
  PgSession session = db.session();
  session.exec("CREATE TABLE public.t (id int PRIMARY KEY, a text)");
  pqxx::connection conn(db.conninfo());
  TableCatalog catalog;
  auto held = catalog.resolve(conn, "public", "t");
  ASSERT_TRUE(held);

  session.exec("ALTER TABLE public.t ADD COLUMN b text");
  auto again = catalog.resolve_for(conn, "public", "t", RawObject(nlohmann::json{{"id", 1}, {"b", "x"}}), 0ms);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->columns, (std::vector<std::string>{"id", "a", "b"}));
  // What the batch planned with before the catalog read the table again is intact.
  EXPECT_EQ(held->qualified(), "\"public\".\"t\"");
  EXPECT_EQ(held->columns, (std::vector<std::string>{"id", "a"}));
  EXPECT_EQ(held->key_columns, (std::vector<std::string>{"id"}));
}

TEST(TableCatalog, AnEntryOutlivesItsLifetimeInTheCache) {
  ScratchDatabase db("pgft_catalog");
  PgSession session = db.session();
  session.exec("CREATE TABLE public.t (id int PRIMARY KEY, a text); CREATE TABLE public.u (k text PRIMARY KEY)");
  pqxx::connection conn(db.conninfo());
  TableCatalog catalog(0s);  // every lookup finds the cache expired and empties it
  auto t = catalog.resolve(conn, "public", "t");
  ASSERT_TRUE(t);
  std::this_thread::sleep_for(5ms);
  auto u = catalog.resolve(conn, "public", "u");
  ASSERT_TRUE(u);
  EXPECT_EQ(t->qualified(), "\"public\".\"t\"");
  EXPECT_EQ(t->columns, (std::vector<std::string>{"id", "a"}));
  EXPECT_EQ(u->key_columns, (std::vector<std::string>{"k"}));
}

TEST(TableCatalog, NamesPostgresqlWouldCutAndMissingTablesDoNotResolve) {
  ScratchDatabase db("pgft_catalog");
  PgSession session = db.session();
  const std::string name63(63, 'n');
  session.exec("CREATE TABLE public." + name63 + " (id int PRIMARY KEY)");
  pqxx::connection conn(db.conninfo());
  TableCatalog catalog;
  EXPECT_TRUE(catalog.resolve(conn, "public", name63));
  EXPECT_FALSE(catalog.resolve(conn, "public", name63 + "tail"));
  EXPECT_FALSE(catalog.resolve(conn, "public", "later"));
  session.exec("CREATE TABLE public.later (id int PRIMARY KEY)");
  EXPECT_FALSE(catalog.resolve(conn, "public", "later"));  // within a batch: remembered
  catalog.forget_missing();
  EXPECT_TRUE(catalog.resolve(conn, "public", "later"));
}

}  // namespace
}  // namespace pgfanout::test
