// The built examples run as a user runs them, each checked against what its header comment
// promises: echo_server (first line, TCP / UDP / length-framed echo, signals, bad arguments),
// udp_await (the lost first request and the resend), packet_server with packet_client.
#include "child_process.hpp"
#include "pipe_support.hpp"

#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
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
