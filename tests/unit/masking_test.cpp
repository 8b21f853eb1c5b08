#include "pgfanout/masking.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace pgfanout {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(MaskConninfo, KeyValuePassword) {
  EXPECT_EQ(mask_conninfo("host=h port=5432 password=secret user=u"),
            "host=h port=5432 password=**** user=u");
  EXPECT_EQ(mask_conninfo("password=secret"), "password=****");
}

TEST(MaskConninfo, SpacesAroundTheEqualsSign) {
  EXPECT_EQ(mask_conninfo("host = h password = secret dbname=d"), "host = h password = **** dbname=d");
}

TEST(MaskConninfo, QuotedPasswordWithSpacesQuotesAndBackslashes) {
  EXPECT_EQ(mask_conninfo(R"(user=u password='se cr\'et\\' dbname=d)"),
            "user=u password=**** dbname=d");
  EXPECT_EQ(mask_conninfo("password='' host=h"), "password=**** host=h");
}

TEST(MaskConninfo, QuotedOtherValuesAreKept) {
  EXPECT_EQ(mask_conninfo("application_name='my app' password=x"),
            "application_name='my app' password=****");
}

TEST(MaskConninfo, TheClientKeysPassphraseToo) {
  EXPECT_EQ(mask_conninfo("host=h sslmode=verify-full sslkey=/k.pem sslpassword=secret user=u"),
            "host=h sslmode=verify-full sslkey=/k.pem sslpassword=**** user=u");
  EXPECT_EQ(mask_conninfo("postgres://h/db?sslkey=/k.pem&sslpassword=secret"),
            "postgres://h/db?sslkey=/k.pem&sslpassword=****");
}

TEST(MaskConninfo, NoPasswordIsUnchanged) {
  const char* plain = "host=127.0.0.1 port=55432 user=postgres dbname=postgres";
  EXPECT_EQ(mask_conninfo(plain), plain);
  EXPECT_EQ(mask_conninfo(""), "");
}

TEST(MaskConninfo, PasswordValueThatLooksLikeAUrl) {
  std::string m = mask_conninfo("host=h password=x://secret@y user=u");
  EXPECT_THAT(m, Not(HasSubstr("secret")));
  EXPECT_THAT(m, HasSubstr("user=u"));
}

TEST(MaskConninfo, UriWithUserAndPassword) {
  EXPECT_EQ(mask_conninfo("postgresql://u:secret@h:5432/db"), "postgresql://u:****@h:5432/db");
  EXPECT_EQ(mask_conninfo("postgres://u:secret@h/db?sslmode=require"),
            "postgres://u:****@h/db?sslmode=require");
}

TEST(MaskConninfo, UriWithPasswordParameter) {
  EXPECT_EQ(mask_conninfo("postgres://h/db?password=secret&sslmode=require"),
            "postgres://h/db?password=****&sslmode=require");
  EXPECT_EQ(mask_conninfo("postgres://u@h/db?sslmode=require&password=secret"),
            "postgres://u@h/db?sslmode=require&password=****");
  EXPECT_EQ(mask_conninfo("postgres://u:a@h/db?password=b"), "postgres://u:****@h/db?password=****");
}

TEST(MaskConninfo, UriWithoutPasswordIsUnchanged) {
  for (const char* uri : {"postgresql://u@h/db", "postgresql://h:5432/db", "postgresql:///db",
                          "postgres://h/db?sslmode=require"}) {
    EXPECT_EQ(mask_conninfo(uri), uri);
  }
}

TEST(MaskUrl, UserAndPassword) {
  EXPECT_EQ(mask_url("amqp://guest:guest@127.0.0.1:5672/%2f"), "amqp://guest:****@127.0.0.1:5672/%2f");
  EXPECT_EQ(mask_url("amqps://u:p@h"), "amqps://u:****@h");
}

TEST(MaskUrl, PasswordContainingAnAt) {
  std::string m = mask_url("amqp://u:p@ss@h/v");
  EXPECT_THAT(m, Not(HasSubstr("p@ss")));
  EXPECT_THAT(m, HasSubstr("@h/v"));
}

TEST(MaskUrl, NoPasswordIsUnchanged) {
  for (const char* url : {"amqp://u@h/v", "amqp://h", "http://h:1/p?q=1", "not a url"}) {
    EXPECT_EQ(mask_url(url), url);
  }
}

}  // namespace
}  // namespace pgfanout
