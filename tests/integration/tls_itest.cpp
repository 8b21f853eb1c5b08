// TLS on both sides and secrets kept off command lines, against the real servers of
// scripts/servers.sh: RabbitMQ's TLS listener (a certificate for the DNS name `localhost`
// from the test CA), PostgreSQL with ssl = on, a second CA that nothing trusts, and a
// pg_hba line that asks members of pgfanout_password_users for a scram-sha-256 password.

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <random>

#include "harness.hpp"
#include "pgfanout/amqp_url.hpp"

namespace pgfanout::test {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using namespace std::chrono_literals;

std::string tls_file(const char* variable) { return required_env(variable); }
std::string ca() { return tls_file("PGFANOUT_TEST_TLS_CA"); }
std::string other_ca() { return tls_file("PGFANOUT_TEST_TLS_OTHER_CA"); }

// amqps:// to the test broker's TLS port by the name its certificate holds.
std::string amqps_url(const std::string& host, int port, const std::string& query) {
  return "amqps://guest:guest@" + host + ":" + std::to_string(port) + "/%2f?" + query;
}
int amqps_port() { return std::stoi(required_env("PGFANOUT_TEST_AMQPS_PORT")); }

// libpq conninfo for `dbname` on the test cluster, over TLS checked against `root_cert`.
std::string verified_conninfo(const std::string& dbname, const std::string& root_cert,
                              const std::string& host = "localhost") {
  return "host=" + host + " port=" + required_env("PGFANOUT_TEST_PGPORT") +
         " user=postgres dbname=" + dbname + " sslmode=verify-full sslrootcert=" + root_cert;
}

Process start_publisher_on(const std::string& source, const std::string& amqp,
                           const std::string& exchange, EnvVars env = {},
                           std::vector<std::string> extra = {}) {
  std::vector<std::string> args{"--source",   source,   "--amqp",      amqp, "--exchange",
                                exchange,     "--pack", "10",          "--log-level", "debug"};
  args.insert(args.end(), extra.begin(), extra.end());
  return Process(publisher_binary(), std::move(args), std::move(env));
}

Process start_listener_on(const std::string& target, const std::string& amqp,
                          const std::string& queue, const std::string& exchange,
                          EnvVars env = {}, std::vector<std::string> extra = {}) {
  std::vector<std::string> args{"--target", target,   "--queue",     queue, "--amqp", amqp,
                                "--exchange", exchange, "--log-level", "debug"};
  args.insert(args.end(), extra.begin(), extra.end());
  return Process(listener_binary(), std::move(args), std::move(env));
}

// A primary and a replica with one tracked table, an exchange and the listener's queues;
// the programs are the test's to start, with the URLs and conninfos it is about.
struct Chain {
  Chain() {
    const char* table = "CREATE TABLE public.items (id int PRIMARY KEY, label text NOT NULL)";
    primary.exec(table);
    replica.exec(table);
    install_schema(primary_db.conninfo());
    primary.exec("SELECT pgfanout.track('public.items')");
  }
  void write(int from, int to) {
    primary.exec("INSERT INTO public.items SELECT g, 'item ' || g FROM generate_series(" +
                 std::to_string(from) + ", " + std::to_string(to) + ") g");
    primary.exec("UPDATE public.items SET label = label || ' changed' WHERE id % 3 = 0");
  }
  // Everything written has reached the replica, and nothing was dead-lettered.
  void expect_replicated() {
    wait_applied(primary, replica, dead.name());
    EXPECT_EQ(queue_depth(dead.name()), 0u);
    EXPECT_EQ(table_md5(replica, "public.items", "id"), table_md5(primary, "public.items", "id"));
    EXPECT_GT(replica.integer("SELECT count(*) FROM public.items"), 0);
  }

  ScratchDatabase primary_db{"pgft_tls_p"};
  ScratchDatabase replica_db{"pgft_tls_r"};
  PgSession primary = primary_db.session();
  PgSession replica = replica_db.session();
  TestExchange exchange{"pgft_tls_x"};
  TestQueue queue{exchange.name(), {}, QueueOptions::listener_compatible()};
  TestQueue dead{exchange.name(), {}, QueueOptions::dead_letter_compatible(), queue.name() + ".dead"};
};

// A program that was refused keeps trying (INTERFACE.md: a server that refuses is
// retried), logs `why` each time, and stops cleanly when asked.
void expect_refused_and_retrying(Process& program, std::string_view why) {
  eventually([&] { return program.count_in_log(why) >= 2; }, kPatience,
             "a second attempt refused with '" + std::string(why) + "'");
  EXPECT_TRUE(program.running());
  EXPECT_EQ(program.stop(), 0);
}

// What a program wrote, without the harness's first line (its command line).
std::string output_of(const Process& program) {
  std::string log = program.log();
  return log.substr(log.find('\n') + 1);
}

// The AMQP connections whose connection_name is `name`, as "port ssl peer_cert_subject".
std::vector<std::string> broker_connections(const std::string& name) {
  CommandResult r = rabbitmqctl(
      {"list_connections", "-q", "--no-table-headers", "port", "ssl", "peer_cert_subject",
       "client_properties"});
  if (r.exit_code != 0) throw HarnessError("rabbitmqctl list_connections: " + r.err);
  std::vector<std::string> out;
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);) {
    if (line.find("{\"connection_name\",\"" + name + "\"}") == std::string::npos) continue;
    auto tab = line.find('\t', line.find('\t', line.find('\t') + 1) + 1);
    out.push_back(line.substr(0, tab));
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// TLS

TEST(Tls, TheChainRunsOverAmqpsAndVerifiedPostgresql) {
  Chain chain;
  std::string amqp = amqps_url("localhost", amqps_port(), "cacert=" + ca());
  Process listener = start_listener_on(verified_conninfo(chain.replica_db.name(), ca()), amqp,
                                       chain.queue.name(), chain.exchange.name());
  listener.wait_for_log("consuming from");
  Process publisher = start_publisher_on(verified_conninfo(chain.primary_db.name(), ca()), amqp,
                                         chain.exchange.name());
  chain.write(1, 200);
  chain.expect_replicated();

  // Every session of both programs is encrypted, on both servers.
  PgSession admin(pg_admin_conninfo());
  for (const auto& [program, db] : {std::pair{"pgfanout-publisher", chain.primary_db.name()},
                                    std::pair{"pgfanout-listener", chain.replica_db.name()}}) {
    std::string sessions =
        "FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = " +
        sql_literal(program) + " AND a.datname = " + sql_literal(db);
    EXPECT_GE(admin.integer("SELECT count(*) " + sessions + " AND s.ssl"), 1) << program;
    EXPECT_EQ(admin.integer("SELECT count(*) " + sessions + " AND NOT s.ssl"), 0) << program;
  }
  std::string port = std::to_string(amqps_port());
  EXPECT_THAT(broker_connections("pgfanout-publisher"),
              ::testing::ElementsAre(port + "\ttrue\t"));
  EXPECT_THAT(broker_connections("pgfanout-listener " + chain.queue.name()),
              ::testing::ElementsAre(port + "\ttrue\t"));
  EXPECT_EQ(publisher.stop(), 0);
  EXPECT_EQ(listener.stop(), 0);
}

TEST(Tls, ABrokerCertificateFromAnotherCaIsRefusedAndRetried) {
  Chain chain;
  std::string amqp = amqps_url("localhost", amqps_port(), "cacert=" + other_ca());
  Process publisher = start_publisher_on(chain.primary_db.conninfo(), amqp, chain.exchange.name());
  Process listener = start_listener_on(chain.replica_db.conninfo(), amqp, chain.queue.name(),
                                       chain.exchange.name());
  for (Process* program : {&publisher, &listener}) {
    program->wait_for_log("certificate at localhost:" + std::to_string(amqps_port()) +
                          " is not trusted");
    EXPECT_THAT(program->log(), HasSubstr("must chain to a CA in cacert " + other_ca()));
    expect_refused_and_retrying(*program, "is not trusted");
  }
}

TEST(Tls, AHostNameTheBrokerCertificateLacksIsRefusedAndRetried) {
  // The certificate names `localhost` only; 127.0.0.1 is the same server under a name the
  // certificate does not hold (and rabbitmq-c would not match an IP address anyway).
  Chain chain;
  std::string amqp = amqps_url("127.0.0.1", amqps_port(), "cacert=" + ca());
  Process publisher = start_publisher_on(chain.primary_db.conninfo(), amqp, chain.exchange.name());
  Process listener = start_listener_on(chain.replica_db.conninfo(), amqp, chain.queue.name(),
                                       chain.exchange.name());
  for (Process* program : {&publisher, &listener}) {
    program->wait_for_log("is not issued for host name '127.0.0.1'");
    EXPECT_THAT(program->log(), HasSubstr("DNS names only"));
    expect_refused_and_retrying(*program, "is not issued for host name");
  }
}

TEST(Tls, APostgresqlCertificateFromAnotherCaOrForAnotherNameIsRefusedAndRetried) {
  Chain chain;
  Process publisher = start_publisher_on(verified_conninfo(chain.primary_db.name(), other_ca()),
                                         amqp_url(), chain.exchange.name());
  Process listener =
      start_listener_on(verified_conninfo(chain.replica_db.name(), ca(), "127.0.0.1"), amqp_url(),
                        chain.queue.name(), chain.exchange.name());
  expect_refused_and_retrying(publisher, "certificate verify failed");
  expect_refused_and_retrying(listener, "does not match host name \"127.0.0.1\"");
}

// A second TLS listener on the test broker that refuses clients without a certificate
// from the test CA. RabbitMQ's TLS options hold for all its TLS listeners, so this one is
// started at run time with its own (the shared one lets clients without certificates in);
// stopped again at the end. A broker restart drops it too.
class CertificateRequiredListener {
 public:
  CertificateRequiredListener() : port_(free_port()) {
    CommandResult r = rabbitmqctl(
        {"eval", "{ok, Options} = application:get_env(rabbit, ssl_options), "
                 "rabbit_networking:start_ssl_listener({\"127.0.0.1\", " +
                     std::to_string(port_) +
                     "}, lists:keystore(fail_if_no_peer_cert, 1, Options, "
                     "{fail_if_no_peer_cert, true}), 1, 1)."});
    if (r.exit_code != 0 || r.out.find("ok") != 0) {
      throw HarnessError("starting a TLS listener that requires client certificates: " + r.out +
                         r.err);
    }
  }
  ~CertificateRequiredListener() {
    rabbitmqctl({"eval", "rabbit_networking:stop_tcp_listener({\"127.0.0.1\", " +
                             std::to_string(port_) + "})."});
  }
  CertificateRequiredListener(const CertificateRequiredListener&) = delete;
  CertificateRequiredListener& operator=(const CertificateRequiredListener&) = delete;
  int port() const { return port_; }

 private:
  int port_;
};

std::string client_cert_query(const char* cert_variable, const char* key_variable) {
  return "cacert=" + ca() + "&certfile=" + tls_file(cert_variable) +
         "&keyfile=" + tls_file(key_variable);
}

// What AmqpConnection says when the broker refuses it; "" when it is let in.
std::string refusal(const std::string& url) {
  try {
    AmqpConnection connection(AmqpUrl::parse(url), "pgfanout-test-tls");
    return "";
  } catch (const AmqpError& e) {
    return e.what();
  }
}

TEST(Tls, MutualTlsWithABrokerThatRequiresClientCertificates) {
  CertificateRequiredListener broker;
  // The broker really requires one from the test CA.
  EXPECT_THAT(refusal(amqps_url("localhost", broker.port(), "cacert=" + ca())),
              HasSubstr("does the broker require a client certificate?"));
  EXPECT_THAT(refusal(amqps_url("localhost", broker.port(),
                                client_cert_query("PGFANOUT_TEST_TLS_OTHER_CLIENT_CERT",
                                                  "PGFANOUT_TEST_TLS_OTHER_CLIENT_KEY"))),
              HasSubstr("is the client certificate from a CA the broker trusts?"));

  Chain chain;
  Process refused = start_publisher_on(chain.primary_db.conninfo(),
                                       amqps_url("localhost", broker.port(), "cacert=" + ca()),
                                       chain.exchange.name());
  expect_refused_and_retrying(refused, "does the broker require a client certificate?");

  std::string amqp = amqps_url("localhost", broker.port(),
                               client_cert_query("PGFANOUT_TEST_TLS_CLIENT_CERT",
                                                 "PGFANOUT_TEST_TLS_CLIENT_KEY"));
  Process listener = start_listener_on(verified_conninfo(chain.replica_db.name(), ca()), amqp,
                                       chain.queue.name(), chain.exchange.name());
  listener.wait_for_log("consuming from");
  Process publisher = start_publisher_on(verified_conninfo(chain.primary_db.name(), ca()), amqp,
                                         chain.exchange.name());
  chain.write(1, 100);
  chain.expect_replicated();
  std::string seen = std::to_string(broker.port()) + "\ttrue\tCN=pgfanout-client";
  EXPECT_THAT(broker_connections("pgfanout-publisher"), ::testing::ElementsAre(seen));
  EXPECT_THAT(broker_connections("pgfanout-listener " + chain.queue.name()),
              ::testing::ElementsAre(seen));
  EXPECT_EQ(publisher.stop(), 0);
  EXPECT_EQ(listener.stop(), 0);
}

// ---------------------------------------------------------------------------------------
// Secrets

std::string random_password() {
  std::random_device random;
  std::string out = "pw";
  for (int i = 0; i < 24; ++i) out += "0123456789abcdefghijklmnopqrstuvwxyz"[random() % 36];
  return out;
}

// A file only its owner can read, as libpq requires of a password file.
std::string private_file(const std::string& name, const std::string& contents) {
  std::string path = test_log_dir() + "/" + name;
  std::ofstream(path, std::ios::trunc) << contents;
  ::chmod(path.c_str(), 0600);
  return path;
}

// What ps shows of a process: its arguments, NULs as spaces.
std::string command_line_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (char& c : text) {
    if (c == '\0') c = ' ';
  }
  if (text.empty()) throw HarnessError("no command line for pid " + std::to_string(pid));
  return text;
}

// A RabbitMQ user of its own with every right on the default vhost, deleted at the end.
// (rabbitmqctl takes the password as an argument: a test-only, random one.)
class BrokerUser {
 public:
  BrokerUser() : name_(unique_name("pgft_user")), password_(random_password()) {
    for (const std::vector<std::string>& args :
         {std::vector<std::string>{"add_user", name_, password_},
          std::vector<std::string>{"set_permissions", "-p", "/", name_, ".*", ".*", ".*"}}) {
      CommandResult r = rabbitmqctl(args);
      if (r.exit_code != 0) throw HarnessError("rabbitmqctl " + args[0] + ": " + r.err);
    }
  }
  ~BrokerUser() { rabbitmqctl({"delete_user", name_}); }
  BrokerUser(const BrokerUser&) = delete;
  BrokerUser& operator=(const BrokerUser&) = delete;
  const std::string& name() const { return name_; }
  const std::string& password() const { return password_; }

 private:
  std::string name_;
  std::string password_;
};

// A PostgreSQL login role that pg_hba asks for a scram-sha-256 password (a member of
// pgfanout_password_users). Superuser, since what it may do is not what these tests are
// about; dropped at the end (after the databases its programs wrote to).
class PasswordRole {
 public:
  PasswordRole() : name_(unique_name("pgft_pw_role")), password_(random_password()) {
    PgSession admin(pg_admin_conninfo());
    admin.exec(
        "DO $$ BEGIN CREATE ROLE pgfanout_password_users NOLOGIN; "
        "EXCEPTION WHEN duplicate_object THEN NULL; END $$");
    admin.exec("CREATE ROLE " + name_ + " LOGIN SUPERUSER IN ROLE pgfanout_password_users "
               "PASSWORD " + sql_literal(password_));
  }
  ~PasswordRole() {
    try {
      PgSession(pg_admin_conninfo()).exec("DROP ROLE IF EXISTS " + name_);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "dropping role " << name_ << ": " << e.what();
    }
  }
  PasswordRole(const PasswordRole&) = delete;
  PasswordRole& operator=(const PasswordRole&) = delete;
  const std::string& name() const { return name_; }
  const std::string& password() const { return password_; }
  // Conninfo of `dbname` as this role, without its password.
  std::string conninfo(const std::string& dbname) const {
    return "host=127.0.0.1 port=" + required_env("PGFANOUT_TEST_PGPORT") + " user=" + name_ +
           " dbname=" + dbname;
  }

 private:
  std::string name_;
  std::string password_;
};

// How a program is given its passwords, none of them on its command line.
struct HiddenPasswords {
  std::string amqp_url;
  EnvVars env;
  std::vector<std::string> flags;
};

// The chain with both programs logging in with passwords that appear on no command line:
// one program reads them from files (PGPASSFILE, and --amqp-password-file, whose password
// replaces a wrong one in its URL), the other from its environment (PGPASSWORD and
// PGFANOUT_AMQP_PASSWORD).
void run_chain_with_hidden_passwords(bool publisher_reads_files) {
  PasswordRole role;
  BrokerUser user;
  Chain chain;
  std::string pgpass = private_file("pgpass", "*:*:*:" + role.name() + ":" + role.password() + "\n");
  std::string amqp_password = private_file("amqp-password", user.password() + "\n");

  // Without a password the role is refused: pg_hba does ask for one.
  CommandResult without = run_command({"psql", "-X", "-w", "-c", "SELECT 1",
                                       role.conninfo(chain.primary_db.name())},
                                      kPatience, {{"PGPASSFILE", "/dev/null"}});
  EXPECT_NE(without.exit_code, 0);
  EXPECT_THAT(without.err, HasSubstr("password"));

  AmqpUrl broker = AmqpUrl::parse(amqp_url());
  std::string endpoint = "@" + broker.host + ":" + std::to_string(broker.port) + "/%2f";
  HiddenPasswords files{"amqp://" + user.name() + ":wrong-in-url" + endpoint,
                        {{"PGPASSFILE", pgpass}},
                        {"--amqp-password-file", amqp_password}};
  HiddenPasswords environment{"amqp://" + user.name() + endpoint,
                              {{"PGPASSWORD", role.password()},
                               {"PGFANOUT_AMQP_PASSWORD", user.password()}},
                              {}};
  const HiddenPasswords& for_publisher = publisher_reads_files ? files : environment;
  const HiddenPasswords& for_listener = publisher_reads_files ? environment : files;

  Process listener = start_listener_on(role.conninfo(chain.replica_db.name()),
                                       for_listener.amqp_url, chain.queue.name(),
                                       chain.exchange.name(), for_listener.env, for_listener.flags);
  listener.wait_for_log("consuming from");
  Process publisher = start_publisher_on(role.conninfo(chain.primary_db.name()),
                                         for_publisher.amqp_url, chain.exchange.name(),
                                         for_publisher.env, for_publisher.flags);
  chain.write(1, 100);
  chain.expect_replicated();

  for (Process* program : {&publisher, &listener}) {
    std::string shown = command_line_of(program->pid());
    EXPECT_THAT(shown, HasSubstr(user.name()));
    std::string output = output_of(*program);
    for (const std::string& secret : {role.password(), user.password()}) {
      EXPECT_THAT(shown, Not(HasSubstr(secret)));
      EXPECT_THAT(output, Not(HasSubstr(secret)));
    }
    EXPECT_THAT(output, Not(HasSubstr("wrong-in-url")));
    EXPECT_THAT(output, HasSubstr("amqp://" + user.name() + ":****@"));
  }
  EXPECT_EQ(publisher.stop(), 0);
  EXPECT_EQ(listener.stop(), 0);
}

TEST(Secrets, PublisherWithPasswordFilesListenerWithTheEnvironment) {
  run_chain_with_hidden_passwords(true);
}

TEST(Secrets, PublisherWithTheEnvironmentListenerWithPasswordFiles) {
  run_chain_with_hidden_passwords(false);
}

TEST(Secrets, APasswordOrTlsFileThatCannotBeReadIsAConfigurationError) {
  std::string empty = private_file("empty-password", "");
  std::vector<std::pair<std::vector<std::string>, std::string>> cases{
      {{"--amqp-password-file", "/nonexistent/amqp-password"}, "'/nonexistent/amqp-password'"},
      {{"--amqp-password-file", empty}, "is empty"},
      {{"--amqp", amqps_url("localhost", amqps_port(), "cacert=/nonexistent/ca.pem")},
       "cacert '/nonexistent/ca.pem' cannot be read"},
  };
  for (const auto& [flags, why] : cases) {
    for (bool publisher : {true, false}) {
      std::vector<std::string> argv{publisher ? publisher_binary() : listener_binary()};
      if (publisher) {
        argv.insert(argv.end(), {"--source", "dbname=unused"});
      } else {
        argv.insert(argv.end(), {"--target", "dbname=unused", "--queue", "unused"});
      }
      argv.insert(argv.end(), flags.begin(), flags.end());
      CommandResult r = run_command(argv);
      EXPECT_EQ(r.exit_code, 2) << argv[0] << " " << flags[1];
      EXPECT_THAT(r.err, HasSubstr(why)) << argv[0];
      EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    }
  }
}

}  // namespace
}  // namespace pgfanout::test
