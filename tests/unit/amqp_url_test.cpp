#include "pgfanout/amqp_url.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <stdexcept>

namespace pgfanout {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using namespace std::chrono_literals;

TEST(AmqpUrl, EmptyAuthorityKeepsEveryDefault) {
  AmqpUrl u = AmqpUrl::parse("amqp://");
  EXPECT_FALSE(u.tls);
  EXPECT_EQ(u.user, "guest");
  EXPECT_EQ(u.password, "guest");
  EXPECT_EQ(u.host, "127.0.0.1");
  EXPECT_EQ(u.port, 5672);
  EXPECT_EQ(u.vhost, "/");
  EXPECT_EQ(u.heartbeat, 15s);
  EXPECT_TRUE(u.verify);
  EXPECT_TRUE(u.cacert.empty());
}

TEST(AmqpUrl, TheInterfaceDefault) {
  AmqpUrl u = AmqpUrl::parse("amqp://guest:guest@127.0.0.1:5672/%2f");
  EXPECT_EQ(u.host, "127.0.0.1");
  EXPECT_EQ(u.port, 5672);
  EXPECT_EQ(u.vhost, "/");
  EXPECT_EQ(u.user, "guest");
  EXPECT_EQ(u.password, "guest");
}

TEST(AmqpUrl, HostOnly) {
  AmqpUrl u = AmqpUrl::parse("amqp://rabbit.example.com");
  EXPECT_EQ(u.host, "rabbit.example.com");
  EXPECT_EQ(u.port, 5672);
  EXPECT_EQ(u.vhost, "/");
}

TEST(AmqpUrl, AmqpsDefaultsToPort5671AndTls) {
  AmqpUrl u = AmqpUrl::parse("amqps://h");
  EXPECT_TRUE(u.tls);
  EXPECT_EQ(u.port, 5671);
  AmqpUrl explicit_port = AmqpUrl::parse("amqps://h:5999/v");
  EXPECT_EQ(explicit_port.port, 5999);
  EXPECT_TRUE(explicit_port.tls);
}

TEST(AmqpUrl, PercentDecodesUserPasswordAndVhost) {
  AmqpUrl u = AmqpUrl::parse("amqp://us%40er:p%3Aa%2Fs%25s@h:1234/my%20vhost");
  EXPECT_EQ(u.user, "us@er");
  EXPECT_EQ(u.password, "p:a/s%s");
  EXPECT_EQ(u.host, "h");
  EXPECT_EQ(u.port, 1234);
  EXPECT_EQ(u.vhost, "my vhost");
}

TEST(AmqpUrl, EncodedSlashIsTheDefaultVhostOrPartOfAName) {
  EXPECT_EQ(AmqpUrl::parse("amqp://h/%2f").vhost, "/");
  EXPECT_EQ(AmqpUrl::parse("amqp://h/%2F").vhost, "/");
  EXPECT_EQ(AmqpUrl::parse("amqp://h/a%2fb").vhost, "a/b");
}

TEST(AmqpUrl, EmptyPathIsTheEmptyVhost) {
  // As the AMQP URI spec says: "amqp://h" is vhost "/", "amqp://h/" is vhost "".
  EXPECT_EQ(AmqpUrl::parse("amqp://h/").vhost, "");
}

TEST(AmqpUrl, UserWithoutPasswordKeepsDefaultPassword) {
  AmqpUrl u = AmqpUrl::parse("amqp://alice@h");
  EXPECT_EQ(u.user, "alice");
  EXPECT_EQ(u.password, "guest");
}

TEST(AmqpUrl, PasswordMayContainAnUnencodedAt) {
  AmqpUrl u = AmqpUrl::parse("amqp://u:p@ss@h/v");
  EXPECT_EQ(u.user, "u");
  EXPECT_EQ(u.password, "p@ss");
  EXPECT_EQ(u.host, "h");
}

TEST(AmqpUrl, Ipv6Hosts) {
  AmqpUrl with_port = AmqpUrl::parse("amqp://u:p@[::1]:5673/v");
  EXPECT_EQ(with_port.host, "::1");
  EXPECT_EQ(with_port.port, 5673);
  EXPECT_EQ(with_port.vhost, "v");
  AmqpUrl without_port = AmqpUrl::parse("amqp://[fe80::1:2]");
  EXPECT_EQ(without_port.host, "fe80::1:2");
  EXPECT_EQ(without_port.port, 5672);
  EXPECT_THAT(with_port.masked(), HasSubstr("[::1]:5673"));
}

TEST(AmqpUrl, HeartbeatOption) {
  EXPECT_EQ(AmqpUrl::parse("amqp://h/v?heartbeat=30").heartbeat, 30s);
  EXPECT_EQ(AmqpUrl::parse("amqp://h/v?heartbeat=0").heartbeat, 0s);
  EXPECT_EQ(AmqpUrl::parse("amqp://h?heartbeat=5").heartbeat, 5s);
  EXPECT_THROW(AmqpUrl::parse("amqp://h/v?heartbeat=abc"), std::invalid_argument);
  EXPECT_THROW(AmqpUrl::parse("amqp://h/v?heartbeat=-1"), std::invalid_argument);
  EXPECT_THROW(AmqpUrl::parse("amqp://h/v?heartbeat=3601"), std::invalid_argument);
  EXPECT_THROW(AmqpUrl::parse("amqp://h/v?heartbeat="), std::invalid_argument);
  EXPECT_THROW(AmqpUrl::parse("amqp://h/v?heartbeat"), std::invalid_argument);
}

TEST(AmqpUrl, TlsOptions) {
  AmqpUrl u = AmqpUrl::parse(
      "amqps://h/v?cacert=%2Fetc%2Fca.pem&certfile=/c.pem&keyfile=/k.pem&verify=false");
  EXPECT_EQ(u.cacert, "/etc/ca.pem");
  EXPECT_EQ(u.certfile, "/c.pem");
  EXPECT_EQ(u.keyfile, "/k.pem");
  EXPECT_FALSE(u.verify);
  EXPECT_TRUE(AmqpUrl::parse("amqps://h/v?verify=true").verify);
  EXPECT_THROW(AmqpUrl::parse("amqps://h/v?verify=maybe"), std::invalid_argument);
}

TEST(AmqpUrl, BadSchemeIsRejected) {
  EXPECT_THROW(AmqpUrl::parse("http://h/"), std::invalid_argument);
  EXPECT_THROW(AmqpUrl::parse("amqp:/h"), std::invalid_argument);
  EXPECT_THROW(AmqpUrl::parse("AMQP-ish"), std::invalid_argument);
  EXPECT_THROW(AmqpUrl::parse(""), std::invalid_argument);
}

TEST(AmqpUrl, BadPortIsRejected) {
  for (const char* url : {"amqp://h:0", "amqp://h:65536", "amqp://h:abc", "amqp://h:",
                          "amqp://h:12x/v", "amqp://h:-5", "amqp://[::1]:", "amqp://[::1]x",
                          "amqp://[::1"}) {
    EXPECT_THROW(AmqpUrl::parse(url), std::invalid_argument) << url;
  }
  EXPECT_EQ(AmqpUrl::parse("amqp://h:65535").port, 65535);
  EXPECT_EQ(AmqpUrl::parse("amqp://h:1").port, 1);
}

TEST(AmqpUrl, BadOptionIsRejected) {
  EXPECT_THROW(AmqpUrl::parse("amqp://h/v?frame_max=1"), std::invalid_argument);
  EXPECT_THROW(AmqpUrl::parse("amqp://h/v?heartbeat=10&nope=1"), std::invalid_argument);
}

TEST(AmqpUrl, MalformedPercentEncodingIsRejected) {
  for (const char* url : {"amqp://u%:p@h/v", "amqp://u:p%4@h/v", "amqp://h/v%zz", "amqp://h/%"}) {
    EXPECT_THROW(AmqpUrl::parse(url), std::invalid_argument) << url;
  }
}

TEST(AmqpUrl, MultiSegmentVhostIsRejected) {
  EXPECT_THROW(AmqpUrl::parse("amqp://h/a/b"), std::invalid_argument);
}

TEST(AmqpUrl, ErrorsNameTheProblem) {
  try {
    AmqpUrl::parse("amqp://h:99999");
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr("port"));
  }
  try {
    AmqpUrl::parse("amqp://h/?colour=blue");
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr("colour"));
  }
}

TEST(AmqpUrl, TlsOptionsNeedAmqps) {
  for (const char* url : {"amqp://h/v?cacert=/ca.pem", "amqp://h/v?verify=false",
                          "amqp://h/v?certfile=/c.pem&keyfile=/k.pem"}) {
    try {
      AmqpUrl::parse(url);
      ADD_FAILURE() << "accepted " << url;
    } catch (const std::invalid_argument& e) {
      EXPECT_THAT(e.what(), HasSubstr("amqps://")) << url;
    }
  }
}

TEST(AmqpUrl, ClientCertificateAndKeyGoTogether) {
  EXPECT_THROW(AmqpUrl::parse("amqps://h/v?certfile=/c.pem"), std::invalid_argument);
  EXPECT_THROW(AmqpUrl::parse("amqps://h/v?keyfile=/k.pem"), std::invalid_argument);
}

TEST(AmqpUrl, AnErrorNeverQuotesThePassword) {
  // A missing '@' or an unencoded '/' puts (part of) the password where the port goes.
  for (const char* url : {"amqp://u:s3cr3t", "amqp://u:s3cr3t/v", "amqps://u:s3/cr3t@h/v",
                          "amqp://u:s3cr3t@h:s3cr3t/v"}) {
    try {
      AmqpUrl::parse(url);
      ADD_FAILURE() << "accepted " << url;
    } catch (const std::invalid_argument& e) {
      EXPECT_THAT(e.what(), Not(HasSubstr("s3"))) << url;
      EXPECT_THAT(e.what(), HasSubstr("port")) << url;
    }
  }
}

TEST(AmqpUrl, MaskedNeverContainsThePassword) {
  for (const char* url :
       {"amqp://guest:pw@127.0.0.1:5672/%2f", "amqp://u:s3cr3t@h/v", "amqps://u:s3cr3t@h:1/v",
        "amqp://u:s3cr3t%40x@h/v?heartbeat=5", "amqp://u:s3cr3t@[::1]:5672/v"}) {
    AmqpUrl u = AmqpUrl::parse(url);
    std::string m = u.masked();
    EXPECT_THAT(m, Not(HasSubstr(u.password))) << url;
    EXPECT_THAT(m, HasSubstr("****")) << url;
    EXPECT_THAT(m, HasSubstr(u.user)) << url;
    EXPECT_THAT(m, HasSubstr(u.host)) << url;
  }
}

TEST(AmqpUrl, MaskedShowsSchemePortAndVhost) {
  EXPECT_EQ(AmqpUrl::parse("amqp://u:pw@h:1234/%2f").masked(), "amqp://u:****@h:1234/%2f");
  EXPECT_EQ(AmqpUrl::parse("amqps://u:pw@h/v").masked(), "amqps://u:****@h:5671/v");
}

}  // namespace
}  // namespace pgfanout

namespace pgfanout {
namespace {

TEST(AmqpUrlList, CommaSeparatedNodesEachWithTheirOwnOptions) {
  auto nodes = AmqpUrl::parse_list(
      "amqp://u:p@127.0.0.1:5672/%2f, amqps://u:p@localhost:5671/v?cacert=/etc/ca%2C1.pem,amqp://127.0.0.1:5674");
  ASSERT_EQ(nodes.size(), 3u);
  EXPECT_EQ(nodes[0].port, 5672);
  EXPECT_FALSE(nodes[0].tls);
  EXPECT_TRUE(nodes[1].tls);
  EXPECT_EQ(nodes[1].host, "localhost");
  EXPECT_EQ(nodes[1].vhost, "v");
  EXPECT_EQ(nodes[1].cacert, "/etc/ca,1.pem");
  EXPECT_EQ(nodes[2].port, 5674);
  EXPECT_EQ(nodes[2].user, "guest");
}

TEST(AmqpUrlList, ACommaInAPasswordIsPercentEncoded) {
  auto nodes = AmqpUrl::parse_list("amqp://u:a%2Cb@h1:1,amqp://u:a%2Cb@h2:2");
  ASSERT_EQ(nodes.size(), 2u);
  EXPECT_EQ(nodes[0].password, "a,b");
  EXPECT_EQ(nodes[1].host, "h2");
}

TEST(AmqpUrlList, OneUrlIsAListOfOne) {
  auto nodes = AmqpUrl::parse_list("amqp://guest:guest@127.0.0.1:5672/%2f");
  ASSERT_EQ(nodes.size(), 1u);
  EXPECT_EQ(nodes[0].host, "127.0.0.1");
}

TEST(AmqpUrlList, EmptyOrBadMembersAreRefusedNamingWhichOne) {
  EXPECT_THROW(AmqpUrl::parse_list(""), std::invalid_argument);
  EXPECT_THROW(AmqpUrl::parse_list("amqp://h1,"), std::invalid_argument);
  EXPECT_THROW(AmqpUrl::parse_list(",amqp://h1"), std::invalid_argument);
  try {
    AmqpUrl::parse_list("amqp://h1,http://h2");
    FAIL() << "accepted http://";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("URL 2"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace pgfanout
