#include "pgfanout/libpq_connect.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <pqxx/except>

using namespace pgfanout;
using ::testing::HasSubstr;
using ::testing::Not;

namespace {

// What connect_libpq throws for `conninfo` (no server listens on port 1).
std::string connect_error(const std::string& conninfo, std::string_view what = {}) {
  try {
    connect_libpq(conninfo, {{"application_name", "unit"}, {"connect_timeout", "2"}}, what);
  } catch (const pqxx::broken_connection& e) {
    return e.what();
  }
  ADD_FAILURE() << "connected with " << conninfo;
  return {};
}

}  // namespace

// libpq quotes a URI it cannot parse, or the token that failed, in its message.
TEST(ConnectLibpq, MessageAboutAMalformedUriHoldsNoPassword) {
  std::string m = connect_error("postgresql://u:hunter%zz2@127.0.0.1:1/db");
  EXPECT_THAT(m, Not(HasSubstr("hunter")));
  EXPECT_THAT(m, HasSubstr("percent-encoded"));
}

TEST(ConnectLibpq, MessageAboutMalformedPairsHoldsNoPasswordPart) {
  std::string m = connect_error("host=127.0.0.1 port=1 password=two words");
  EXPECT_THAT(m, Not(HasSubstr("words")));
  EXPECT_THAT(m, HasSubstr("missing"));
}

TEST(ConnectLibpq, RefusedConnectionSaysWhatAndHoldsNoPassword) {
  std::string m = connect_error("postgresql://u:hunter2@127.0.0.1:1/db", "replication connection");
  EXPECT_THAT(m, Not(HasSubstr("hunter2")));
  EXPECT_THAT(m, ::testing::StartsWith("replication connection: "));
  EXPECT_THAT(m, HasSubstr("127.0.0.1"));
}
