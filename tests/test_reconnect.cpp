// ReconnectingClient over loopback: it survives its server's restart on the same port, the
// pauses between attempts double up to max_delay, max_attempts ends it saying so, close()
// stops it at any point, sends while no connection is up are refused, bad settings refused.
#include "pipe_support.hpp"
#include "support.hpp"

#include <pipeworks/pipeworks.hpp>

#include <uv.h>

#include <chrono>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

using namespace pipeworks;
using namespace pw_test;
using namespace std::chrono_literals;

namespace {

// An echo server; reuse_addr lets a restart bind the port again while the old connections
// are in TIME_WAIT.
PipePtr echo_server(Loop& loop, const Address& at) {
    NetConf conf;
    conf.reuse_addr = true;
    auto s = must(Pipe::listen(loop, at, conf), "echo listen");
    s->on_message([](Pipe& p, const Message& m) { CHECK(!p.send(m.data)); });
    return s;
}

// What a client's callbacks saw.
struct Seen {
    std::string got;
    int ups = 0, downs = 0, ends = 0;
    std::vector<EndInfo> down_info;
    struct Retry {
        int n;
        std::chrono::milliseconds delay;
        EndInfo why;
    };
    std::vector<Retry> retries;
    std::optional<EndInfo> end;
};

std::shared_ptr<Seen> watch(ReconnectingClient& c) {
    auto s = std::make_shared<Seen>();
    c.on_message([s](Pipe&, const Message& m) { s->got += m.data; });
    c.on_up([s](Pipe&) { ++s->ups; });
    c.on_down([s](Pipe&, const EndInfo& e) {
        ++s->downs;
        s->down_info.push_back(e);
    });
    c.on_retry([s](ReconnectingClient&, int n, std::chrono::milliseconds d, const EndInfo& e) {
        s->retries.push_back({n, d, e});
    });
    c.on_end([s](ReconnectingClient&, const EndInfo& e) {
        ++s->ends;
        s->end = e;
    });
    return s;
}

ReconnectConf quick(int max_attempts = 0) {
    ReconnectConf r;
    r.min_delay = 20ms;
    r.max_delay = 80ms;
    r.max_attempts = max_attempts;
    return r;
}

}  // namespace

TEST_CASE("a reconnecting client survives its server's restart on the same port") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto server = echo_server(loop, lo(f));
        const Address at = server->local_address();
        auto c = must(ReconnectingClient::open(loop, at, {}, quick()), "open");
        auto s = watch(*c);
        run_until(
            loop, [&] { return c->is_up(); }, "first connection");
        REQUIRE(!c->send("one"));
        run_until(
            loop, [&] { return s->got == "one"; }, "echo on the first connection");

        // The server goes away: the connection is lost, attempts are refused meanwhile.
        server->close();
        run_until(
            loop, [&] { return s->downs == 1 && s->retries.size() >= 3; }, "refused retries");
        CHECK_FALSE(c->is_up());
        CHECK(s->down_info[0].reason == EndReason::peer_close);
        Error refused = c->send("lost");
        CAPTURE(refused.message);
        CHECK(refused == errc::not_connected);
        CHECK(c->failed_attempts() >= 2);

        // The same port again (the OS chose it; re-binding it is allowed): messages flow.
        server = echo_server(loop, at);
        run_until(
            loop, [&] { return c->is_up(); }, "the second connection");
        CHECK(s->ups == 2);
        CHECK(c->connections() == 2);
        CHECK(c->failed_attempts() == 0);
        CHECK(c->connection()->peer_address() == at);
        REQUIRE(!c->send("two"));
        run_until(
            loop, [&] { return s->got == "onetwo"; }, "echo on the second connection");
        CHECK(s->ends == 0);

        c->close();
        run_until(
            loop, [&] { return s->ends == 1; }, "the client's end");
        CHECK(s->end->reason == EndReason::local_close);
        CHECK(s->downs == 2);
        CHECK(c->ended());
        run_for(loop, 100ms);
        CHECK(s->ups == 2);
        CHECK(s->ends == 1);
        CHECK(server->clients().empty());
    }
}

TEST_CASE("reconnecting: the pauses double up to max_delay; max_attempts ends it saying so") {
    Loop loop;
    const Address nowhere = closed_tcp_port(loop, Family::ipv4);
    auto c = must(ReconnectingClient::open(loop, nowhere, {}, quick(5)), "open");
    auto s = watch(*c);
    const auto t0 = std::chrono::steady_clock::now();
    run_until(
        loop, [&] { return s->end.has_value(); }, "the end after 5 failed connects");
    const auto took = std::chrono::steady_clock::now() - t0;
    REQUIRE(s->retries.size() == 4);
    std::vector<long> delays;
    for (const auto& r : s->retries) delays.push_back(static_cast<long>(r.delay.count()));
    CHECK(delays == std::vector<long>{20, 40, 80, 80});
    for (int i = 0; i < 4; ++i) {
        CHECK(s->retries[static_cast<std::size_t>(i)].n == i + 1);
        CHECK(s->retries[static_cast<std::size_t>(i)].why.reason == EndReason::error);
    }
    CHECK(took >= 220ms);  // 20 + 40 + 80 + 80
    CAPTURE(s->end->error.message);
    CHECK(s->end->reason == EndReason::error);
    CHECK(s->end->error.code == uv_error_code(UV_ECONNREFUSED));
    CHECK(mentions(s->end->error, "gave up after 5 failed connects"));
    CHECK(mentions(s->end->error, "ReconnectConf.max_attempts"));
    CHECK(mentions(s->end->error, nowhere.to_string()));
    CHECK(s->ups == 0);
    CHECK(s->downs == 0);
    CHECK(s->ends == 1);
    CHECK(c->ended());
    CHECK(c->connection() == nullptr);
    CHECK(c->send("x") == errc::pipe_ended);
}

TEST_CASE("reconnecting: close() stops it while waiting, while connecting, and while up") {
    Loop loop;
    SUBCASE("while waiting to try again") {
        const Address nowhere = closed_tcp_port(loop, Family::ipv4);
        ReconnectConf slow = quick();
        slow.min_delay = 300ms;
        slow.max_delay = 300ms;
        auto c = must(ReconnectingClient::open(loop, nowhere, {}, slow), "open");
        auto s = watch(*c);
        run_until(
            loop, [&] { return s->retries.size() == 1; }, "the first refusal");
        CHECK(c->connection() == nullptr);
        c->close();
        c->close();           // idempotent
        CHECK(s->ends == 0);  // never inside close()
        run_until(
            loop, [&] { return s->ends == 1; }, "the end");
        run_for(loop, 500ms);
        CHECK(s->retries.size() == 1);
        CHECK(s->ends == 1);
        CHECK(s->end->reason == EndReason::local_close);
    }
    SUBCASE("while connecting") {
        BlackholeListener hole = blackhole_listener(Family::ipv4);
        REQUIRE(hole.full);
        auto c = must(ReconnectingClient::open(loop, hole.address, {}, quick()), "open");
        auto s = watch(*c);
        run_for(loop, 50ms);
        REQUIRE(c->connection());
        c->close();
        run_until(
            loop, [&] { return s->ends == 1; }, "the end");
        run_for(loop, 200ms);
        CHECK(s->retries.empty());
        CHECK(s->end->reason == EndReason::local_close);
        CHECK(s->downs == 0);
    }
    SUBCASE("while up; the server sees one connection only") {
        auto server = echo_server(loop, lo(Family::ipv4));
        int accepted = 0;
        server->on_accept([&](Pipe&, const PipePtr&) { ++accepted; });
        auto c = must(ReconnectingClient::open(loop, server->local_address(), {}, quick()), "open");
        auto s = watch(*c);
        run_until(
            loop, [&] { return c->is_up(); }, "up");
        REQUIRE(!c->send("bye"));
        c->close();
        run_until(
            loop, [&] { return s->ends == 1; }, "the end");
        run_for(loop, 200ms);
        CHECK(accepted == 1);
        CHECK(s->downs == 1);
        CHECK(s->down_info[0].unsent_bytes == 0);
        CHECK(s->retries.empty());
    }
    SUBCASE("through connection()->close()") {
        auto server = echo_server(loop, lo(Family::ipv4));
        auto c = must(ReconnectingClient::open(loop, server->local_address(), {}, quick()), "open");
        auto s = watch(*c);
        run_until(
            loop, [&] { return c->is_up(); }, "up");
        c->connection()->close();
        run_until(
            loop, [&] { return s->ends == 1; }, "the end");
        CHECK(s->end->reason == EndReason::local_close);
        CHECK(s->retries.empty());
    }
}

TEST_CASE("reconnecting by name: every attempt resolves again (hosts file)") {
    Loop loop;
    auto server = echo_server(loop, lo(Family::ipv4));
    const Address at = server->local_address();
    NetConf v4;
    v4.family_policy = FamilyPolicy::ipv4_only;
    auto c =
        must(ReconnectingClient::open(loop, "localhost:" + std::to_string(at.port()), v4, quick()),
             "open by name");
    auto s = watch(*c);
    run_until(
        loop, [&] { return c->is_up(); }, "up by name");
    server->close();
    run_until(
        loop, [&] { return !s->retries.empty(); }, "a retry");
    server = echo_server(loop, at);
    run_until(
        loop, [&] { return s->ups == 2; }, "up again by name");
    REQUIRE(!c->send("again"));
    run_until(
        loop, [&] { return s->got == "again"; }, "echo");
    c->close();
    run_until(
        loop, [&] { return s->ends == 1; }, "the end");
}

TEST_CASE("reconnecting: bad settings and bad addresses are refused at once") {
    Loop loop;
    const Address to = Address::loopback(Family::ipv4, 9);
    ReconnectConf zero;
    zero.min_delay = 0ms;
    auto a = ReconnectingClient::open(loop, to, {}, zero);
    REQUIRE(!a);
    CHECK(a.error() == errc::invalid_config);
    CHECK(mentions(a.error(), "ReconnectConf.min_delay"));
    ReconnectConf inverted;
    inverted.min_delay = 100ms;
    inverted.max_delay = 50ms;
    auto b = ReconnectingClient::open(loop, to, {}, inverted);
    REQUIRE(!b);
    CHECK(mentions(b.error(), "ReconnectConf.max_delay"));
    ReconnectConf negative;
    negative.max_attempts = -1;
    auto d = ReconnectingClient::open(loop, to, {}, negative);
    REQUIRE(!d);
    CHECK(mentions(d.error(), "ReconnectConf.max_attempts"));
    auto port0 = ReconnectingClient::open(loop, Address::loopback(Family::ipv4, 0));
    REQUIRE(!port0);
    CHECK(port0.error() == errc::invalid_address);
    auto bad_name = ReconnectingClient::open(loop, "no-port-here");
    REQUIRE(!bad_name);
    NetConf bad_conf;
    bad_conf.con_timeout = 0ms;
    auto e = ReconnectingClient::open(loop, to, bad_conf);
    REQUIRE(!e);
    CHECK(mentions(e.error(), "NetConf.con_timeout"));
}

TEST_CASE("reconnecting: a callback that throws ends the client and reaches run_until") {
    Loop loop;
    const Address nowhere = closed_tcp_port(loop, Family::ipv4);
    auto c = must(ReconnectingClient::open(loop, nowhere, {}, quick()), "open");
    auto s = watch(*c);
    c->on_retry([](ReconnectingClient&, int, std::chrono::milliseconds, const EndInfo&) {
        throw std::runtime_error("from on_retry");
    });
    CHECK_THROWS_WITH(loop.run_until([] { return false; }, 2000ms), "from on_retry");
    REQUIRE(s->end.has_value());
    CHECK(s->end->error == errc::callback_threw);
    CHECK(mentions(s->end->error, "the retry callback"));
    CHECK(c->ended());
    run_for(loop, 200ms);
    CHECK(s->retries.size() == 1);
    CHECK(s->ends == 1);
}

TEST_CASE("reconnecting: a loop destroyed while it waits runs none of its callbacks") {
    int calls = 0;
    std::weak_ptr<ReconnectingClient> weak;
    {
        Loop loop;
        const Address nowhere = closed_tcp_port(loop, Family::ipv4);
        auto c = must(ReconnectingClient::open(loop, nowhere, {}, quick()), "open");
        weak = c;
        c->on_end([&](ReconnectingClient&, const EndInfo&) { ++calls; });
        bool retried = false;
        c->on_retry([&](ReconnectingClient&, int, std::chrono::milliseconds, const EndInfo&) {
            retried = true;
        });
        run_until(
            loop, [&] { return retried; }, "a retry");
        c.reset();
    }
    CHECK(calls == 0);
    CHECK(weak.expired());
}
