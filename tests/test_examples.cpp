// The built examples run as a user runs them, each checked against what its header comment
// promises: echo_server (first line, TCP / UDP / length-framed echo, signals, bad arguments),
// udp_await (the lost first request and the resend), packet_server with packet_client, and
// what the servers share: repeated stop signals, their limits' flags, accept failures.
#include "child_process.hpp"
#include "pipe_support.hpp"
#include "tls_support.hpp"

#include <pipeworks/version.hpp>

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

using namespace pipeworks;
using namespace pw_test;

namespace {

// The lines of `text`, without their newlines.
std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> out;
    std::size_t at = 0;
    for (std::size_t nl; (nl = text.find('\n', at)) != std::string::npos; at = nl + 1)
        out.push_back(text.substr(at, nl - at));
    if (at < text.size()) out.push_back(text.substr(at));
    return out;
}

std::string bind_host(Family f) {
    return f == Family::ipv4 ? "127.0.0.1" : "[::1]";
}

// Sends `data` through a TCP connection to `at` and waits until all of it has come back.
void tcp_round_trip(Loop& loop, const Address& at, const std::string& data) {
    auto client = must(Pipe::connect(loop, at), "connect");
    auto got = collect(*client);
    REQUIRE(!client->send(data));
    run_until(
        loop, [&] { return got->data.size() >= data.size(); }, "the echo");
    CHECK(got->data == data);
    client->close();
    run_until(
        loop, [&] { return client->ended(); }, "client closed");
}

void write_text_file(const std::string& path, const std::string& text) {
    std::ofstream out(path, std::ios::binary);
    out << text;
    REQUIRE(out.good());
}

// `count` passed, none failed, and nothing on stderr: packet_client's verdict on a good run.
void check_client_passed(Child& client, int count) {
    CAPTURE(client.err_text);
    CHECK(client.wait_exit() == 0);
    CHECK(client.out_text == std::to_string(count) + " passed, 0 failed\n");
    CHECK(client.err_text.empty());
}

}  // namespace

// ---------------------------------------------------------------- echo_server

TEST_CASE("echo_server: the first line is the real address; TCP echo over IPv4 and IPv6") {
    const std::string bin = binary_from_env("PIPEWORKS_EXAMPLE_ECHO_SERVER");
    if (bin.empty()) return;
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        Child server({bin, "--bind", bind_host(f) + ":0"});
        const Address at = listening_address(server, bind_host(f), &loop);
        CHECK(at.family() == f);
        tcp_round_trip(loop, at, "hello, echo");
        // Larger than one read: every byte comes back, in order.
        tcp_round_trip(loop, at, payload(256 * 1024));
        server.poll();
        CHECK(!server.status);
        CHECK(server.err_text.empty());
    }
}

TEST_CASE(
    "echo_server --tls-cert --tls-key: a TLS echo server; a verifying client's bytes return") {
    const std::string bin = binary_from_env("PIPEWORKS_EXAMPLE_ECHO_SERVER");
    if (bin.empty()) return;
    Key ca_key = ec_key();
    Cert ca = make_cert(ca_key.get(), "echo test CA", nullptr, nullptr, 1, true);
    Key key = ec_key();
    Cert leaf = make_cert(key.get(), "localhost", ca.get(), ca_key.get(), 2, false);
    const auto dir = std::filesystem::temp_directory_path() /
                     ("pipeworks-echo-tls-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    const std::string cert_file = (dir / "cert.pem").string(),
                      key_file = (dir / "key.pem").string();
    write_text_file(cert_file, pem_of(leaf.get()));
    write_text_file(key_file, pem_of(key.get()));
    {
        Loop loop;
        Child server(
            {bin, "--bind", "127.0.0.1:0", "--tls-cert", cert_file, "--tls-key", key_file});
        const Address at = listening_address(server, "127.0.0.1", &loop);
        NetConf conf;
        conf.use_ssl = true;
        conf.tls.ca_pem = pem_of(ca.get());
        auto client = must(Pipe::connect(loop, at, conf), "connect");
        auto got = collect(*client);
        const std::string data = payload(100 * 1024);
        REQUIRE(!client->send(data));
        run_until(
            loop, [&] { return got->data.size() >= data.size(); }, "the echo over TLS");
        CHECK(got->data == data);
        CHECK(client->tls_info().verified);
        client->close();
        run_until(
            loop, [&] { return client->ended(); }, "client closed");
        server.poll();
        CHECK(!server.status);
        CHECK(server.err_text.empty());
    }
    std::filesystem::remove_all(dir);
}

TEST_CASE("echo_server --udp: each datagram comes back to its sender, IPv4 and IPv6") {
    const std::string bin = binary_from_env("PIPEWORKS_EXAMPLE_ECHO_SERVER");
    if (bin.empty()) return;
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        Child server({bin, "--udp", "--bind", bind_host(f) + ":0"});
        const Address at = listening_address(server, bind_host(f), &loop);
        auto a = must(Pipe::udp(loop, lo(f), at), "udp a");
        auto b = must(Pipe::udp(loop, lo(f), at), "udp b");
        auto got_a = collect(*a);
        auto got_b = collect(*b);
        REQUIRE(!a->send("from a"));
        REQUIRE(!b->send("from b"));
        REQUIRE(!a->send("again a"));
        run_until(
            loop, [&] { return got_a->msgs.size() == 2 && got_b->msgs.size() == 1; },
            "the echoed datagrams");
        CHECK(got_a->msgs == std::vector<std::string>{"from a", "again a"});
        CHECK(got_b->msgs == std::vector<std::string>{"from b"});
        CHECK(got_a->from[0] == at);
        a->close();
        b->close();
        run_until(
            loop, [&] { return a->ended() && b->ended(); }, "UDP pipes closed");
    }
}

TEST_CASE("echo_server --framing length: framed messages come back whole, one for one") {
    const std::string bin = binary_from_env("PIPEWORKS_EXAMPLE_ECHO_SERVER");
    if (bin.empty()) return;
    Loop loop;
    Child server({bin, "--framing", "length", "--bind", "127.0.0.1:0"});
    const Address at = listening_address(server, "127.0.0.1", &loop);
    NetConf conf;
    conf.framer = Framer::message();
    auto client = must(Pipe::connect(loop, at, conf), "connect");
    auto got = collect(*client);
    // A message spread over many reads, and small ones that share a read: the boundaries
    // survive the round trip only if the server echoes frames, not reads.
    const std::vector<std::string> sent = {"first", payload(200 * 1024), "", "x", "last"};
    for (const auto& m : sent) REQUIRE(!client->send(m));
    run_until(
        loop, [&] { return got->msgs.size() >= sent.size(); }, "the framed echoes");
    CHECK(got->msgs == sent);
    run_for(loop, 50ms);
    CHECK(got->msgs.size() == sent.size());
    CHECK(!client->ended());
    client->close();
    run_until(
        loop, [&] { return client->ended(); }, "client closed");
}

TEST_CASE("echo_server: SIGTERM and SIGINT each make it exit 0, a client connected or not") {
    const std::string bin = binary_from_env("PIPEWORKS_EXAMPLE_ECHO_SERVER");
    if (bin.empty()) return;
    for (int sig : {SIGTERM, SIGINT}) {
        for (bool connected : {false, true}) {
            CAPTURE(sig);
            CAPTURE(connected);
            Loop loop;
            Child server({bin, "--bind", "127.0.0.1:0"});
            const Address at = listening_address(server, "127.0.0.1", &loop);
            tcp_round_trip(loop, at, "ready?");
            PipePtr client;
            std::shared_ptr<Ends> ends;
            if (connected) {
                client = must(Pipe::connect(loop, at), "connect");
                ends = watch_end(*client);
                auto got = collect(*client);
                REQUIRE(!client->send("open"));
                run_until(
                    loop, [&] { return got->data == "open"; }, "the echo");
            }
            REQUIRE(::kill(server.pid, sig) == 0);
            CHECK(server.wait_exit(&loop) == 0);
            CHECK(server.err_text.empty());
            if (connected) {
                run_until(
                    loop, [&] { return ends->count == 1; }, "the connection ends with the server");
                CHECK(ends->info.reason != EndReason::error);
            }
            // Nothing listens any more.
            auto late = must(Pipe::connect(loop, at), "connect");
            auto late_end = watch_end(*late);
            run_until(
                loop, [&] { return late_end->count == 1; }, "the late connect fails");
            CHECK(late_end->info.reason == EndReason::error);
        }
    }
}

TEST_CASE("servers and the relay take a signal sent as soon as they print their first line") {
    // The handlers are in place before "listening on" is printed, so a supervisor may signal
    // the moment it has read the line.
    struct Server {
        const char* env;
        std::vector<std::string> args;
        int sig;
    };
    const std::vector<Server> servers = {
        {"PIPEWORKS_EXAMPLE_ECHO_SERVER", {"--bind", "127.0.0.1:0"}, SIGTERM},
        {"PIPEWORKS_EXAMPLE_ECHO_SERVER", {"--udp", "--bind", "[::1]:0"}, SIGINT},
        {"PIPEWORKS_EXAMPLE_PACKET_SERVER", {"--bind", "127.0.0.1:0"}, SIGINT},
        {"PIPEWORKS_EXAMPLE_PACKET_SERVER", {"--bind", "[::1]:0"}, SIGTERM},
        // The relay tool too; no client comes, so its target is never dialled.
        {"PIPEWORKS_RELAY_BIN", {"tcp://127.0.0.1:0", "tcp://127.0.0.1:9"}, SIGTERM},
    };
    for (const Server& s : servers) {
        const std::string bin = binary_from_env(s.env);
        if (bin.empty()) continue;
        CAPTURE(bin);
        CAPTURE(s.sig);
        for (int i = 0; i < 20; ++i) {
            std::vector<std::string> argv{bin};
            argv.insert(argv.end(), s.args.begin(), s.args.end());
            Child server(argv);
            REQUIRE(server.wait_first_line());
            REQUIRE(server.out_text.starts_with("listening on "));
            REQUIRE(::kill(server.pid, s.sig) == 0);
            REQUIRE(server.wait_exit() == 0);
        }
    }
}

TEST_CASE("echo_server: a bad argument exits 2 with the reason and the usage on stderr") {
    const std::string bin = binary_from_env("PIPEWORKS_EXAMPLE_ECHO_SERVER");
    if (bin.empty()) return;
    struct Case {
        std::vector<std::string> args;
        const char* says;
    };
    const std::vector<Case> cases = {
        {{"--bogus"}, "unknown argument: --bogus"},
        {{"--framing", "lines"}, "--framing: expected raw or length, got lines"},
        {{"--bind", "not-an-address"}, "expected HOST:PORT"},
        {{"--bind", "::1:80"}, "need brackets"},
        {{"--bind"}, "unknown argument: --bind"},
        {{"--tls-cert", "server.pem"}, "--tls-cert needs --tls-key too"},
        {{"--tls-key", "server.key"}, "--tls-key needs --tls-cert too"},
        {{"--tls-cert"}, "--tls-cert: needs FILE"},
        {{"--udp", "--tls-cert", "c.pem", "--tls-key", "k.pem"}, "--tls-cert applies to TCP"},
    };
    for (const auto& c : cases) expect_bad_arguments(bin, c.args, c.says, "usage: echo_server");
}

// ---------------------------------------------------------------- udp_await

TEST_CASE("udp_await: the first request is lost, the reply comes after 2 requests") {
    const std::string bin = binary_from_env("PIPEWORKS_EXAMPLE_UDP_AWAIT");
    if (bin.empty()) return;
    Child child({bin});
    CHECK(child.wait_exit() == 0);
    CAPTURE(child.out_text);
    CHECK(child.err_text.empty());
    const auto lines = lines_of(child.out_text);
    REQUIRE(lines.size() == 4);
    CHECK(lines[0] == "send \"hello\", waiting 200 ms for each reply, 2 resends at most");
    CHECK(lines[1] == "echo: request 1 lost");
    CHECK(lines[2] == "echo: request 2 answered");
    const std::string head = "reply \"hello\" from ", tail = " after 2 requests";
    REQUIRE(lines[3].starts_with(head));
    REQUIRE(lines[3].ends_with(tail));
    const std::string from =
        lines[3].substr(head.size(), lines[3].size() - head.size() - tail.size());
    CAPTURE(from);
    CHECK(from.starts_with("127.0.0.1:"));
    auto echo = Address::parse(from);
    REQUIRE(echo.ok());
    CHECK(echo->port() != 0);
}

// ---------------------------------------------------------------- packet_server, packet_client

TEST_CASE("packet_client against packet_server: every request passes, with several options") {
    const std::string server_bin = binary_from_env("PIPEWORKS_EXAMPLE_PACKET_SERVER");
    const std::string client_bin = binary_from_env("PIPEWORKS_EXAMPLE_PACKET_CLIENT");
    if (server_bin.empty() || client_bin.empty()) return;
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Child server({server_bin, "--bind", bind_host(f) + ":0"});
        const std::string at = listening_address(server, bind_host(f)).to_string();
        struct Run {
            std::vector<std::string> options;
            int count;
        };
        const std::vector<Run> runs = {
            {{}, 100},
            {{"--channel", "3", "--count", "200", "--size", "1000"}, 200},
            {{"--window", "1", "--count", "20", "--size", "0"}, 20},
            {{"--count", "10", "--size", "300000"}, 10},
        };
        for (const auto& r : runs) {
            std::vector<std::string> argv{client_bin, at};
            argv.insert(argv.end(), r.options.begin(), r.options.end());
            CAPTURE(r.count);
            Child client(argv);
            check_client_passed(client, r.count);
        }
        // Many clients at once, each on its own connection.
        std::vector<std::unique_ptr<Child>> clients;
        for (const char* channel : {"0", "1", "2"})
            clients.push_back(std::make_unique<Child>(
                std::vector<std::string>{client_bin, at, "--channel", channel, "--count", "300"}));
        for (auto& c : clients) check_client_passed(*c, 300);

        server.poll();
        CHECK(!server.status);
        REQUIRE(::kill(server.pid, SIGTERM) == 0);
        CHECK(server.wait_exit() == 0);
        CHECK(server.err_text.empty());
    }
}

TEST_CASE("packet_client: nothing listening exits non-zero at once, every request failed") {
    const std::string bin = binary_from_env("PIPEWORKS_EXAMPLE_PACKET_CLIENT");
    if (bin.empty()) return;
    Loop loop;
    const Address nowhere = closed_tcp_port(loop, Family::ipv4);
    const auto t0 = std::chrono::steady_clock::now();
    Child client({bin, nowhere.to_string()});
    const int status = client.wait_exit();
    CHECK(std::chrono::steady_clock::now() - t0 < 2s);
    CHECK(status != 0);
    CHECK(status != -1);
    CHECK(client.out_text == "0 passed, 100 failed\n");
    CHECK(!client.err_text.empty());
}

TEST_CASE("packet_client: a bad argument exits 2 with the usage on stderr") {
    const std::string bin = binary_from_env("PIPEWORKS_EXAMPLE_PACKET_CLIENT");
    if (bin.empty()) return;
    for (const auto& args :
         std::vector<std::vector<std::string>>{{},
                                               {"127.0.0.1:1", "--count", "many"},
                                               {"127.0.0.1:1", "--window", "0"},
                                               {"127.0.0.1:1", "--bogus"}}) {
        std::vector<std::string> argv{bin};
        argv.insert(argv.end(), args.begin(), args.end());
        Child child(argv);
        CHECK(child.wait_exit() == 2);
        CHECK(child.err_text.find("usage: packet_client") != std::string::npos);
        CHECK(child.out_text.empty());
    }
}

TEST_CASE("packet_server: SIGTERM or SIGINT shuts an open connection down in order, exits 0") {
    const std::string bin = binary_from_env("PIPEWORKS_EXAMPLE_PACKET_SERVER");
    if (bin.empty()) return;
    for (int sig : {SIGTERM, SIGINT}) {
        CAPTURE(sig);
        Loop loop;
        Child server({bin, "--bind", "127.0.0.1:0"});
        const Address at = listening_address(server, "127.0.0.1", &loop);
        auto conn = must(PacketConnection::open(must(Pipe::connect(loop, at), "connect")), "open");
        std::optional<Error> end;
        conn->on_end([&](PacketConnection&, const Error& e) { end = e; });
        // A response shows the server's loop runs: its signal handlers are installed by then.
        std::optional<PacketResult> echoed;
        conn->submit(0, "ping", [&](PacketResult& r) { echoed = std::move(r); });
        run_until(
            loop, [&] { return echoed.has_value(); }, "the echo request");
        CHECK(!echoed->error);
        CHECK(echoed->ok);
        CHECK(echoed->payload == "ping");

        REQUIRE(::kill(server.pid, sig) == 0);
        // The server's EOF makes this side close in order too: both EOFs, no error.
        run_until(
            loop, [&] { return end.has_value(); }, "the orderly end");
        CHECK(!*end);
        CHECK(server.wait_exit(&loop) == 0);
        CHECK(server.err_text.empty());
    }
}

// ---------------------------------------------------------------- what the servers share

namespace {

// pubsub is no dependency of this suite in tests/meson.build (the other examples are): it is
// taken from PIPEWORKS_EXAMPLE_PUBSUB, else from beside echo_server, where the build puts it.
std::string pubsub_binary() {
    if (const char* b = std::getenv("PIPEWORKS_EXAMPLE_PUBSUB"); b != nullptr && *b != '\0')
        return b;
    const std::string echo = binary_from_env("PIPEWORKS_EXAMPLE_ECHO_SERVER");
    if (echo.empty()) return "";
    const std::string bin = (std::filesystem::path(echo).parent_path() / "pubsub").string();
    if (::access(bin.c_str(), X_OK) != 0) {
        MESSAGE("skipped: " << bin << " is not built");
        return "";
    }
    return bin;
}

// The two servers with the limit flags: their binary, name and framed arguments.
struct LimitedServer {
    const char* env;
    const char* name;
    std::vector<std::string> framed;  // the arguments that make it read frames
};
const LimitedServer kLimitedServers[] = {
    {"PIPEWORKS_EXAMPLE_ECHO_SERVER", "echo_server", {"--framing", "length"}},
    {"PIPEWORKS_EXAMPLE_PACKET_SERVER", "packet_server", {}},
};

std::vector<std::string> with(std::vector<std::string> argv, const std::vector<std::string>& more) {
    argv.insert(argv.end(), more.begin(), more.end());
    return argv;
}

// A client of one of the limited servers: an echo or a packet request, and its end.
struct ServerClient {
    PipePtr pipe;
    PacketConnectionPtr packets;
    std::shared_ptr<Sink> got;
    std::optional<Error> packet_end;
    std::shared_ptr<Ends> ends;
    int answers = 0;

    ServerClient(Loop& loop, const Address& at, bool packet) {
        pipe = must(Pipe::connect(loop, at), "connect");
        ends = watch_end(*pipe);
        if (packet) {
            packets = must(PacketConnection::open(pipe), "open");
            packets->on_end([this](PacketConnection&, const Error& e) { packet_end = e; });
        } else {
            got = collect(*pipe);
        }
    }
    // Sends one request (an echo), answered or not.
    void ask(const std::string& what) {
        if (packets)
            packets->submit(0, what, [this](PacketResult& r) {
                if (r.ok) ++answers;
            });
        else
            REQUIRE(!pipe->send(what));
    }
    int answered() const { return packets ? answers : static_cast<int>(got->msgs.size()); }
    bool ended() const { return packets ? packet_end.has_value() : ends->count > 0; }
};

}  // namespace

TEST_CASE("a second SIGTERM or SIGINT while a server stops, a client connected: it exits 0") {
    // A supervisor that signals again (or a second Ctrl-C) must not turn an orderly stop into
    // a death by signal: echo_server, packet_server and the pubsub broker exit 0 whatever
    // comes after the first signal.
    const std::string echo = binary_from_env("PIPEWORKS_EXAMPLE_ECHO_SERVER");
    const std::string packet = binary_from_env("PIPEWORKS_EXAMPLE_PACKET_SERVER");
    const std::string pubsub = pubsub_binary();
    for (int round = 0; round < 5; ++round) {
        for (int sig : {SIGTERM, SIGINT}) {
            CAPTURE(round);
            CAPTURE(sig);
            if (!echo.empty()) {
                Loop loop;
                Child server({echo, "--bind", "127.0.0.1:0"});
                const Address at = listening_address(server, "127.0.0.1", &loop);
                ServerClient client(loop, at, false);
                client.ask("open");
                run_until(
                    loop, [&] { return client.answered() == 1; }, "the echo");
                CHECK(signal_until_exit(server, sig, &loop) == 0);
                CHECK(server.err_text.empty());
            }
            if (!packet.empty()) {
                Loop loop;
                Child server({packet, "--bind", "127.0.0.1:0"});
                const Address at = listening_address(server, "127.0.0.1", &loop);
                ServerClient client(loop, at, true);
                client.ask("open");
                run_until(
                    loop, [&] { return client.answered() == 1; }, "the answer");
                // The server's EOF makes this side close in order too, while the signals go on.
                CHECK(signal_until_exit(server, sig, &loop) == 0);
                run_until(
                    loop, [&] { return client.ended(); }, "the orderly end");
                CHECK(!*client.packet_end);
                CHECK(server.err_text.empty());
            }
            if (!pubsub.empty()) {
                Loop loop;
                Child broker({pubsub, "broker", "--bind", "127.0.0.1:0"});
                const Address at = listening_address(broker, "127.0.0.1", &loop);
                NetConf conf;
                conf.framer = Framer::message();
                auto sub = must(Pipe::connect(loop, at, conf), "connect");
                auto got = collect(*sub);
                REQUIRE(!sub->send("SUB news"));
                run_until(
                    loop, [&] { return got->msgs.size() == 1; }, "the broker's answer");
                CHECK(got->msgs[0] == "OK");
                CHECK(signal_until_exit(broker, sig, &loop) == 0);
            }
        }
    }
}

TEST_CASE("echo_server, packet_server: the limit flags refuse bad values; --help lists them") {
    for (const LimitedServer& ls : kLimitedServers) {
        const std::string bin = binary_from_env(ls.env);
        if (bin.empty()) continue;
        CAPTURE(ls.name);
        const std::string usage = std::string("usage: ") + ls.name;
        struct Case {
            std::vector<std::string> args;
            std::string says;
        };
        std::vector<Case> cases = {
            {{"--idle-timeout", "soon"},
             "--idle-timeout: expected seconds (e.g. 60 or 0.5), got \"soon\""},
            {{"--idle-timeout", "-1"}, "--idle-timeout: expected seconds"},
            {{"--idle-timeout", "5s"}, "--idle-timeout: expected seconds"},
            {{"--idle-timeout", "inf"}, "--idle-timeout: expected seconds"},
            {{"--idle-timeout"}, "--idle-timeout: needs SECONDS"},
            {with(ls.framed, {"--frame-timeout", "nan"}), "--frame-timeout: expected seconds"},
            {with(ls.framed, {"--frame-timeout", "2000000"}), "--frame-timeout: expected seconds"},
            {{"--frame-timeout"}, "--frame-timeout: needs SECONDS"},
            {{"--max-clients", "0"},
             "--max-clients: expected a whole number from 1 to 1000000, got \"0\""},
            {{"--max-clients", "-3"}, "--max-clients: expected a whole number"},
            {{"--max-clients", "12x"}, "--max-clients: expected a whole number"},
            {{"--max-clients", "1.5"}, "--max-clients: expected a whole number"},
            {{"--max-clients", "99999999999999999999"}, "--max-clients: expected a whole number"},
            {{"--max-clients"}, "--max-clients: needs N"},
        };
        if (std::string_view(ls.name) == "echo_server") {
            // A limit that would do nothing is refused rather than ignored.
            cases.push_back({{"--udp", "--idle-timeout", "5"}, "--idle-timeout applies to TCP"});
            cases.push_back({{"--udp", "--max-clients", "5"}, "--max-clients applies to TCP"});
            cases.push_back({{"--udp", "--framing", "length", "--frame-timeout", "5"},
                             "--frame-timeout applies to TCP"});
            cases.push_back(
                {{"--frame-timeout", "5"}, "--frame-timeout applies to --framing length"});
        }
        for (const Case& c : cases) expect_bad_arguments(bin, c.args, c.says, usage);

        Child help({bin, "--help"});
        CHECK(help.wait_exit() == 0);
        CHECK(help.err_text.empty());
        CAPTURE(help.out_text);
        for (const char* text :
             {"--idle-timeout SECONDS", "(default 60; 0: never)", "--frame-timeout SECONDS",
              "(default 10; 0: no bound)", "--max-clients N", "(default 1024)", usage.c_str()})
            CHECK(help.out_text.find(text) != std::string::npos);

        // Good values: the server starts and serves.
        Loop loop;
        Child server(with({bin, "--bind", "127.0.0.1:0"},
                          with(ls.framed, {"--idle-timeout", "0.5", "--frame-timeout", "0",
                                           "--max-clients", "3"})));
        const Address at = listening_address(server, "127.0.0.1", &loop);
        const bool packet = std::string_view(ls.name) == "packet_server";
        NetConf framed;
        framed.framer = Framer::message();
        if (packet) {
            ServerClient client(loop, at, true);
            client.ask("limits");
            run_until(
                loop, [&] { return client.answered() == 1; }, "the answer");
        } else {
            auto client = must(Pipe::connect(loop, at, framed), "connect");
            auto got = collect(*client);
            REQUIRE(!client->send("limits"));
            run_until(
                loop, [&] { return got->msgs.size() == 1; }, "the echo");
            CHECK(got->msgs[0] == "limits");
        }
        REQUIRE(::kill(server.pid, SIGTERM) == 0);
        CHECK(server.wait_exit(&loop) == 0);
    }
}

// The behaviour behind the flags is the library's (NetConf::idle_timeout, frame_timeout,
// max_clients and Pipe::on_error); these cases wait for the transport to implement it.

TEST_CASE("echo_server, packet_server: --idle-timeout 1 closes a silent client, not a busy one") {
    for (const LimitedServer& ls : kLimitedServers) {
        const std::string bin = binary_from_env(ls.env);
        if (bin.empty()) continue;
        CAPTURE(ls.name);
        const bool packet = std::string_view(ls.name) == "packet_server";
        Loop loop;
        Child server({bin, "--bind", "127.0.0.1:0", "--idle-timeout", "1"});
        const Address at = listening_address(server, "127.0.0.1", &loop);
        ServerClient quiet(loop, at, packet), busy(loop, at, packet);
        quiet.ask("once");
        run_until(
            loop, [&] { return quiet.answered() == 1; }, "the quiet one's answer");
        const auto t0 = std::chrono::steady_clock::now();
        Timer tick;
        std::function<void()> again = [&] {
            busy.ask("tick");
            tick = loop.call_later(200ms, again);
        };
        again();
        run_until(
            loop, [&] { return quiet.ended(); }, "the silent client is closed", 4s);
        const auto waited = std::chrono::steady_clock::now() - t0;
        CHECK(waited >= 900ms);
        CHECK(waited < 3s);
        CHECK(!busy.ended());
        CHECK(busy.answered() >= 5);
        tick.cancel();
        REQUIRE(::kill(server.pid, SIGTERM) == 0);
        CHECK(server.wait_exit(&loop) == 0);
    }
}

TEST_CASE("echo_server, packet_server: --frame-timeout 1 closes a client stopped inside a frame") {
    for (const LimitedServer& ls : kLimitedServers) {
        const std::string bin = binary_from_env(ls.env);
        if (bin.empty()) continue;
        CAPTURE(ls.name);
        const bool packet = std::string_view(ls.name) == "packet_server";
        Loop loop;
        Child server(with({bin, "--bind", "127.0.0.1:0", "--frame-timeout", "1"}, ls.framed));
        const Address at = listening_address(server, "127.0.0.1", &loop);
        // Raw bytes: a frame begun and never finished (a 4-byte length of 5 and 2 bytes; a
        // packet of 5 bytes with 1 of them).
        auto stuck = must(Pipe::connect(loop, at), "connect");
        auto stuck_end = watch_end(*stuck);
        REQUIRE(!stuck->send(packet ? bytes({0x05, 0x02}) : bytes({0, 0, 0, 5, 'a', 'b'})));
        // Whole frames, then silence: no frame has begun, the frame timeout does not apply.
        ServerClient whole(loop, at, packet);
        if (packet) {
            whole.ask("whole");
        } else {
            REQUIRE(!whole.pipe->send(bytes({0, 0, 0, 5}) + "whole"));
        }
        run_until(
            loop, [&] { return whole.answered() == 1 || whole.ended(); }, "the whole frame");
        const auto t0 = std::chrono::steady_clock::now();
        run_until(
            loop, [&] { return stuck_end->count > 0; }, "the stuck client is closed", 4s);
        const auto waited = std::chrono::steady_clock::now() - t0;
        CHECK(waited >= 800ms);
        CHECK(waited < 3s);
        run_for(loop, 1500ms);
        CHECK(!whole.ended());
        REQUIRE(::kill(server.pid, SIGTERM) == 0);
        CHECK(server.wait_exit(&loop) == 0);
    }
}

TEST_CASE("echo_server, packet_server: --max-clients 2 serves two; the third waits for a slot") {
    for (const LimitedServer& ls : kLimitedServers) {
        const std::string bin = binary_from_env(ls.env);
        if (bin.empty()) continue;
        CAPTURE(ls.name);
        const bool packet = std::string_view(ls.name) == "packet_server";
        Loop loop;
        Child server({bin, "--bind", "127.0.0.1:0", "--max-clients", "2"});
        const Address at = listening_address(server, "127.0.0.1", &loop);
        auto a = std::make_unique<ServerClient>(loop, at, packet);
        ServerClient b(loop, at, packet);
        a->ask("a");
        b.ask("b");
        run_until(
            loop, [&] { return a->answered() == 1 && b.answered() == 1; }, "two served");
        ServerClient c(loop, at, packet);
        c.ask("c");
        run_for(loop, 300ms);
        CHECK(c.answered() == 0);  // in the backlog, not refused
        CHECK(!c.ended());
        if (packet)
            a->packets->close();
        else
            a->pipe->close();
        run_until(
            loop, [&] { return a->ended(); }, "a leaves");
        run_until(
            loop, [&] { return c.answered() == 1; }, "the third is served in the freed slot");
        REQUIRE(::kill(server.pid, SIGTERM) == 0);
        CHECK(server.wait_exit(&loop) == 0);
    }
}

TEST_CASE("echo_server, packet_server: a failed accept is reported on stderr; serving goes on") {
    for (const LimitedServer& ls : kLimitedServers) {
        const std::string bin = binary_from_env(ls.env);
        if (bin.empty()) continue;
        CAPTURE(ls.name);
        const bool packet = std::string_view(ls.name) == "packet_server";
        Loop loop;
        Child server({bin, "--bind", "127.0.0.1:0"});
        const Address at = listening_address(server, "127.0.0.1", &loop);
        // Not one descriptor more: the next accept fails with EMFILE.
        const rlim_t before = set_open_file_limit(server.pid, lowest_free_fd(server.pid));
        const std::string line = std::string(ls.name) + ": accept failed: ";
        ServerClient refused(loop, at, packet);
        refused.ask("no room");
        CHECK(server.wait_for([&] { return server.err_text.find(line) != std::string::npos; },
                              &loop));
        CAPTURE(server.err_text);
        // Each report is one line of its own.
        for (const std::string& l : lines_of(server.err_text))
            if (l.find("accept failed") != std::string::npos) CHECK(l.starts_with(line));
        server.poll();
        CHECK(!server.status);
        set_open_file_limit(server.pid, before);
        ServerClient later(loop, at, packet);
        later.ask("room again");
        run_until(
            loop, [&] { return later.answered() == 1; }, "served once descriptors are free");
        REQUIRE(::kill(server.pid, SIGTERM) == 0);
        CHECK(server.wait_exit(&loop) == 0);
    }
}

// ---------------------------------------------------------------- the minimal examples

namespace {

// Runs the example named by `var` with `args` to its exit; its standard output, once it has
// exited 0 with nothing on stderr. Empty (and the test skipped) when `var` is not set.
std::optional<std::string> run_example(const char* var, const std::vector<std::string>& args = {}) {
    const std::string bin = binary_from_env(var);
    if (bin.empty()) return std::nullopt;
    std::vector<std::string> argv{bin};
    argv.insert(argv.end(), args.begin(), args.end());
    Child child(argv);
    CHECK(child.wait_exit() == 0);
    CAPTURE(child.out_text);
    CHECK(child.err_text.empty());
    return child.out_text;
}

// The port of "... from HOST:PORT" at the end of `line`, after checking HOST is `host`.
std::uint16_t port_after(const std::string& line, const std::string& host) {
    CAPTURE(line);
    const std::string from = " from " + host + ":";
    const auto at = line.rfind(from);
    REQUIRE(at != std::string::npos);
    auto parsed = Address::parse(line.substr(at + 6));
    REQUIRE(parsed.ok());
    CHECK(parsed->port() != 0);
    return parsed->port();
}

}  // namespace

TEST_CASE("tcp_client against tcp_server: the line comes back; the server logs the client") {
    const std::string server_bin = binary_from_env("PIPEWORKS_EXAMPLE_TCP_SERVER");
    const std::string client_bin = binary_from_env("PIPEWORKS_EXAMPLE_TCP_CLIENT");
    if (server_bin.empty() || client_bin.empty()) return;
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Child server({server_bin, bind_host(f) + ":0"});
        const Address at = listening_address(server, bind_host(f));
        Child client({client_bin, at.to_string(), "hello there"});
        CHECK(client.wait_exit() == 0);
        CHECK(client.out_text == "reply: hello there\n");
        CHECK(client.err_text.empty());
        // The server saw the client come and go.
        REQUIRE(server.wait_for([&] { return lines_of(server.out_text).size() >= 3; }));
        const auto lines = lines_of(server.out_text);
        CHECK(lines[1].starts_with("client " + bind_host(f) + ":"));
        CHECK(lines[1].ends_with(" connected"));
        CHECK(lines[2].ends_with(" gone: peer close"));
        CHECK(signal_until_exit(server, SIGTERM) == 0);
        CHECK(server.err_text.empty());
    }
}

TEST_CASE("tcp_client: nothing listening exits 1 with the reason; no argument exits 2") {
    const std::string bin = binary_from_env("PIPEWORKS_EXAMPLE_TCP_CLIENT");
    if (bin.empty()) return;
    Loop loop;
    Address closed;
    {
        auto server = must(Pipe::listen(loop, Address::loopback(Family::ipv4)), "listen");
        closed = server->local_address();
        server->close();
        run_until(
            loop, [&] { return server->ended(); }, "server closed");
    }
    Child client({bin, closed.to_string()});
    CHECK(client.wait_exit() == 1);
    CHECK(client.out_text.empty());
    CHECK(client.err_text.find("refused") != std::string::npos);
    Child usage({bin});
    CHECK(usage.wait_exit() == 2);
    CHECK(usage.err_text.find("usage: tcp_client HOST:PORT") != std::string::npos);
}

TEST_CASE("mini_relay: tcp_client reaches tcp_server through it, over IPv4 and IPv6") {
    const std::string relay_bin = binary_from_env("PIPEWORKS_EXAMPLE_MINI_RELAY");
    const std::string server_bin = binary_from_env("PIPEWORKS_EXAMPLE_TCP_SERVER");
    const std::string client_bin = binary_from_env("PIPEWORKS_EXAMPLE_TCP_CLIENT");
    if (relay_bin.empty() || server_bin.empty() || client_bin.empty()) return;
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Child server({server_bin, bind_host(f) + ":0"});
        const Address target = listening_address(server, bind_host(f));
        Child relay({relay_bin, bind_host(f) + ":0", target.to_string()});
        const Address at = listening_address(relay, bind_host(f));
        CHECK(at.port() != target.port());
        for (const char* text : {"through the relay", "and again"}) {
            Child client({client_bin, at.to_string(), text});
            CHECK(client.wait_exit() == 0);
            CHECK(client.out_text == std::string("reply: ") + text + "\n");
        }
        // The server's clients came from the relay, not from tcp_client.
        REQUIRE(server.wait_for([&] { return lines_of(server.out_text).size() >= 5; }));
        CHECK(signal_until_exit(relay, SIGTERM) == 128 + SIGTERM);
        CHECK(signal_until_exit(server, SIGTERM) == 0);
    }
}

TEST_CASE("udp_echo: three replies, in order, from the echo pipe's one port") {
    auto out = run_example("PIPEWORKS_EXAMPLE_UDP_ECHO");
    if (!out) return;
    const auto lines = lines_of(*out);
    REQUIRE(lines.size() == 3);
    CHECK(lines[0].starts_with("reply 1: one from "));
    CHECK(lines[1].starts_with("reply 2: two from "));
    CHECK(lines[2].starts_with("reply 3: three from "));
    const auto port = port_after(lines[0], "127.0.0.1");
    CHECK(port_after(lines[1], "127.0.0.1") == port);
    CHECK(port_after(lines[2], "127.0.0.1") == port);
}

TEST_CASE("framers: every framer delivers the three messages whole, in order") {
    auto out = run_example("PIPEWORKS_EXAMPLE_FRAMERS");
    if (!out) return;
    CHECK(*out ==
          "length_prefixed(4): [alpha] [bravo] [delta]\n"
          "lines: [alpha] [bravo] [delta]\n"
          "delimited(\"\\r\\n\"): [alpha] [bravo] [delta]\n"
          "fixed(5): [alpha] [bravo] [delta]\n"
          "json_header: [alpha] [bravo] [delta]\n");
}

TEST_CASE("subscribe: each queue gets the messages its pattern matches; an empty one times out") {
    auto out = run_example("PIPEWORKS_EXAMPLE_SUBSCRIBE");
    if (!out) return;
    CHECK(*out ==
          "[temp] temp: 21.5\n"
          "[temp] temp: 80.1 ALARM\n"
          "[temp] temp: 22.0\n"
          "[alarm] temp: 80.1 ALARM\n"
          "[log] log: started\n"
          "[log] nothing in 100 ms\n");
}

TEST_CASE("accept: two clients accepted one accept() at a time, then a timeout") {
    auto out = run_example("PIPEWORKS_EXAMPLE_ACCEPT");
    if (!out) return;
    const auto lines = lines_of(*out);
    REQUIRE(lines.size() == 3);
    CHECK(lines[0].starts_with("accepted 1 from 127.0.0.1:"));
    CHECK(lines[1].starts_with("accepted 2 from 127.0.0.1:"));
    CHECK(port_after(lines[0], "127.0.0.1") != port_after(lines[1], "127.0.0.1"));
    CHECK(lines[2] == "no client in 200 ms");
}

TEST_CASE("adopt: a socket listening before the loop existed serves as a pipeworks server") {
    auto out = run_example("PIPEWORKS_EXAMPLE_ADOPT");
    if (!out) return;
    const auto lines = lines_of(*out);
    REQUIRE(lines.size() == 2);
    const std::string head = "adopted a server on ";
    REQUIRE(lines[0].starts_with(head));
    auto at = Address::parse(lines[0].substr(head.size()));
    REQUIRE(at.ok());
    CHECK(at->is_loopback());
    CHECK(at->port() != 0);
    CHECK(lines[1] == "echo: hi");
}

TEST_CASE("post_thread: what a worker thread posts runs on the loop thread, in order") {
    auto out = run_example("PIPEWORKS_EXAMPLE_POST_THREAD");
    if (!out) return;
    CHECK(*out ==
          "result 1 = 1 (sent on the loop thread)\n"
          "result 2 = 4 (sent on the loop thread)\n"
          "result 3 = 9 (sent on the loop thread)\n");
}

TEST_CASE("borrowed_loop: pipeworks and the application's own libuv timer share its loop") {
    auto out = run_example("PIPEWORKS_EXAMPLE_BORROWED_LOOP");
    if (!out) return;
    const auto lines = lines_of(*out);
    REQUIRE(lines.size() == 3);
    CHECK(std::count(lines.begin(), lines.end(), "pipeworks got: ping") == 1);
    CHECK(std::count(lines.begin(), lines.end(), "libuv timer fired") == 1);
    CHECK(lines[2] == "loop closed");
}

TEST_CASE("packet_rpc: two calls answered, then an orderly close") {
    auto out = run_example("PIPEWORKS_EXAMPLE_PACKET_RPC");
    if (!out) return;
    CHECK(*out == "call 1: HELLO\ncall 2: PACKETS\nclosed in order\n");
}

TEST_CASE("every example program prints the version of pipeworks with --version") {
    for (const char* name :
         {"echo_server", "udp_await", "packet_server", "packet_client", "tcp_server", "tcp_client",
          "udp_echo", "framers", "subscribe", "accept", "adopt", "post_thread", "borrowed_loop",
          "mini_relay", "packet_rpc"}) {
        CAPTURE(name);
        std::string var = "PIPEWORKS_EXAMPLE_";
        for (const char* c = name; *c; ++c) var += static_cast<char>(std::toupper(*c));
        auto out = run_example(var.c_str(), {"--version"});
        if (!out) continue;
        CHECK(*out == std::string(name) + " " + PIPEWORKS_VERSION_STRING + "\n");
    }
}
