#include <gtest/gtest.h>

#include <stdexcept>

#include "pgfanout/cli.hpp"

namespace pgfanout {
namespace {

TEST(HostPort, HostAndPort) {
  HostPort hp = HostPort::parse("127.0.0.1:9187");
  EXPECT_EQ(hp.host, "127.0.0.1");
  EXPECT_EQ(hp.port, 9187);
  HostPort named = HostPort::parse("localhost:0");
  EXPECT_EQ(named.host, "localhost");
  EXPECT_EQ(named.port, 0);
  EXPECT_EQ(HostPort::parse("0.0.0.0:65535").port, 65535);
}

TEST(HostPort, BracketedIpv6) {
  HostPort hp = HostPort::parse("[::1]:9187");
  EXPECT_EQ(hp.host, "::1");
  EXPECT_EQ(hp.port, 9187);
  EXPECT_EQ(HostPort::parse("[::]:80").host, "::");
}

TEST(HostPort, MalformedIsRejected) {
  for (const char* text : {"", "9187", "localhost", ":9187", "host:", "host:abc", "host:65536",
                           "host:-1", "host:12ab", "[::1]", "[::1]9187", "[::1]:", "[::1:9187",
                           "[]:9187"}) {
    EXPECT_THROW(HostPort::parse(text), std::invalid_argument) << "'" << text << "'";
  }
}

}  // namespace
}  // namespace pgfanout
