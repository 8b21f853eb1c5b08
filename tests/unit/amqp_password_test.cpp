#include "pgfanout/amqp_password.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "pgfanout/cli.hpp"

namespace pgfanout {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// A file of its own under the temporary directory, removed at the end of the test.
class TempFile {
 public:
  explicit TempFile(std::string_view contents)
      : path_(std::filesystem::temp_directory_path() /
              ("pgfanout_pw_" + std::to_string(::getpid()) + "_" + std::to_string(++counter_))) {
    std::ofstream(path_, std::ios::binary) << contents;
  }
  ~TempFile() { std::filesystem::remove(path_); }
  std::string path() const { return path_.string(); }

 private:
  static inline int counter_ = 0;
  std::filesystem::path path_;
};

// The error text for `contents`, which must be refused.
std::string refusal(std::string_view contents) {
  try {
    password_from_file_contents(contents, "/etc/pgfanout/amqp-password");
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  ADD_FAILURE() << "accepted: " << contents;
  return {};
}

TEST(PasswordFile, OneLineWithOrWithoutItsLineEnd) {
  EXPECT_EQ(password_from_file_contents("s3cr3t\n", "f"), "s3cr3t");
  EXPECT_EQ(password_from_file_contents("s3cr3t\r\n", "f"), "s3cr3t");
  EXPECT_EQ(password_from_file_contents("s3cr3t", "f"), "s3cr3t");
}

TEST(PasswordFile, TakenAsItIsWithoutDecoding) {
  EXPECT_EQ(password_from_file_contents(" a b%2f@:/ \n", "f"), " a b%2f@:/ ");
}

TEST(PasswordFile, EmptyOrSeveralLinesOrANulAreRefusedNamingTheFileNotThePassword) {
  EXPECT_THAT(refusal(""), HasSubstr("/etc/pgfanout/amqp-password' is empty"));
  EXPECT_THAT(refusal("\n"), HasSubstr("is empty"));
  using std::string_view;
  for (string_view contents : {string_view("s3cr3t\nmore\n"), string_view("s3cr3t\n\n"),
                               string_view("s3cr3t\rx"), string_view("s3cr3t\0x", 8)}) {
    std::string why = refusal(contents);
    EXPECT_THAT(why, HasSubstr("/etc/pgfanout/amqp-password")) << contents;
    EXPECT_THAT(why, Not(HasSubstr("s3cr3t"))) << contents;
  }
}

TEST(AmqpPassword, TheFileWinsOverTheEnvironment) {
  TempFile file("from-file\n");
  EXPECT_EQ(amqp_password(file.path(), "from-env"), "from-file");
  EXPECT_EQ(amqp_password(file.path(), nullptr), "from-file");
}

TEST(AmqpPassword, TheEnvironmentWhenNoFile) {
  EXPECT_EQ(amqp_password("", "from-env"), "from-env");
  EXPECT_EQ(amqp_password("", nullptr), std::nullopt);
  EXPECT_EQ(amqp_password("", ""), std::nullopt);
}

TEST(AmqpPassword, AFileThatCannotBeReadIsRefusedNamingIt) {
  try {
    amqp_password("/nonexistent/pgfanout-password", "from-env");
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr("'/nonexistent/pgfanout-password'"));
    EXPECT_THAT(e.what(), HasSubstr("No such file"));
  }
  EXPECT_THROW(amqp_password(std::filesystem::temp_directory_path().string(), nullptr),
               std::invalid_argument);
  EXPECT_THROW(amqp_password("/dev/zero", nullptr), std::invalid_argument);
}

// CommonOptions as the programs use it: the password replaces the URL's.
struct Parsed {
  int code;
  CommonOptions options;
};
Parsed parse(std::vector<std::string> args) {
  CLI::App app("test", "pgfanout-test");
  Parsed out{-1, {}};
  out.options.add_to(app);
  std::reverse(args.begin(), args.end());
  app.parse(args);
  out.code = out.options.check("pgfanout-test");
  return out;
}

TEST(CommonOptions, ThePasswordFileReplacesTheUrlsPassword) {
  TempFile file("from-file\n");
  Parsed p = parse({"--amqp", "amqp://u:in-url@h/v", "--amqp-password-file", file.path()});
  ASSERT_EQ(p.code, -1);
  EXPECT_EQ(p.options.amqp.user, "u");
  EXPECT_EQ(p.options.amqp.password, "from-file");
  EXPECT_THAT(p.options.amqp.masked(), Not(HasSubstr("from-file")));
}

TEST(CommonOptions, ThePasswordGoesToEveryBrokerUrl) {
  TempFile file("from-file\n");
  Parsed p = parse({"--amqp", "amqp://u:one@h1/v,amqps://u@h2/v,amqp://h3", "--amqp-password-file",
                    file.path()});
  ASSERT_EQ(p.code, -1);
  ASSERT_EQ(p.options.brokers.size(), 3u);
  for (const AmqpUrl& broker : p.options.brokers) EXPECT_EQ(broker.password, "from-file");
  EXPECT_EQ(p.options.amqp.password, "from-file");
}

TEST(CommonOptions, TheEnvironmentPasswordReplacesTheUrlsPassword) {
  ::setenv("PGFANOUT_AMQP_PASSWORD", "from-env", 1);
  Parsed with_env = parse({"--amqp", "amqps://u:in-url@h/v"});
  ::unsetenv("PGFANOUT_AMQP_PASSWORD");
  ASSERT_EQ(with_env.code, -1);
  EXPECT_EQ(with_env.options.amqp.password, "from-env");
  Parsed without = parse({"--amqp", "amqps://u:in-url@h/v"});
  EXPECT_EQ(without.options.amqp.password, "in-url");
}

TEST(CommonOptions, AMissingPasswordFileOrTlsFileIsAConfigurationError) {
  EXPECT_EQ(parse({"--amqp-password-file", "/nonexistent/pw"}).code, 2);
  EXPECT_EQ(parse({"--amqp", "amqps://h/v?cacert=/nonexistent/ca.pem"}).code, 2);
  EXPECT_EQ(parse({"--amqp", "amqps://h1/v,amqps://h2/v?cacert=/nonexistent/ca.pem"}).code, 2);
  EXPECT_EQ(parse({"--amqp", "amqps://h/v?certfile=/nonexistent/c.pem&keyfile=/nonexistent/k.pem"})
                .code,
            2);
}

}  // namespace
}  // namespace pgfanout
