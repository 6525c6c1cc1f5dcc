// Connecting to the first of several addresses that answers (Happy Eyeballs): a refused
// address gives way at once, a silent one after 250 ms without being aborted, the winner's
// socket is the pipe's, every failure is listed, and con_timeout bounds the whole.
#include "pipe_support.hpp"

#include <pipeworks/pipeworks.hpp>

#include <chrono>
#include <string>

using namespace pipeworks;
using namespace pw_test;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

struct Client {
    PipePtr pipe;
    std::shared_ptr<Ends> end;
    std::shared_ptr<Sink> got;
    bool up = false;
    Clock::time_point up_at;
};

Client connect_any(Loop& loop, const std::vector<Address>& to, const NetConf& conf = {}) {
    Client c;
    c.pipe = must(Pipe::connect_any(loop, to, conf), "connect_any");
    c.end = watch_end(*c.pipe);
    c.got = collect(*c.pipe);
    return c;
}

PipePtr echo(Loop& loop, Family f) {
    auto s = must(Pipe::listen(loop, lo(f)), "listen");
    s->on_message([](Pipe& p, const Message& m) { CHECK(!p.send(m.data)); });
    return s;
}

}  // namespace

TEST_CASE("connect_any: a refused address gives way at once to one that answers") {
    for (Family good : kFamilies) {
        CAPTURE(family_name(good));
        const Family other = good == Family::ipv4 ? Family::ipv6 : Family::ipv4;
        Loop loop;
        auto server = echo(loop, good);
        const Address refused = closed_tcp_port(loop, other);
        const auto t0 = Clock::now();
        Client c = connect_any(loop, {refused, server->local_address()});
        bool up = false;
        c.pipe->on_up([&](Pipe&) { up = true; });
        REQUIRE(!c.pipe->send("through the second"));
        run_until(
            loop, [&] { return c.got->data == "through the second" || c.end->count > 0; },
            "echo through the address that answers");
        CHECK(up);
        CHECK(c.got->data == "through the second");
        CHECK(Clock::now() - t0 < 200ms);  // no 250 ms wait after a refusal
        CHECK(c.pipe->peer_address() == server->local_address());
        CHECK(c.pipe->native_handle() >= 0);
    }
}

TEST_CASE("connect_any: a silent address is not aborted; the next starts after 250 ms and wins") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        BlackholeListener hole = blackhole_listener(f);
        REQUIRE(hole.full);
        auto server = echo(loop, f == Family::ipv4 ? Family::ipv6 : Family::ipv4);
        const auto t0 = Clock::now();
        Client c = connect_any(loop, {hole.address, server->local_address()});
        Clock::time_point up_at;
        c.pipe->on_up([&](Pipe&) { up_at = Clock::now(); });
        run_until(
            loop, [&] { return up_at != Clock::time_point{} || c.end->count > 0; }, "up");
        REQUIRE(c.end->count == 0);
        const auto waited = up_at - t0;
        CHECK(waited >= 240ms);
        CHECK(waited < 550ms);  // the good one wins within 300 ms of its own start
        CHECK(c.pipe->peer_address() == server->local_address());
        REQUIRE(!c.pipe->send("ok"));
        run_until(
            loop, [&] { return c.got->data == "ok"; }, "echo");
    }
}

TEST_CASE("connect_any: when every address fails, the error lists each one") {
    Loop loop;
    const Address a = closed_tcp_port(loop, Family::ipv4);
    const Address b = closed_tcp_port(loop, Family::ipv6);
    Client c = connect_any(loop, {a, b});
    run_until(
        loop, [&] { return c.end->count == 1; }, "failed");
    const Error& e = c.end->info.error;
    CAPTURE(e.message);
    CHECK(c.end->info.reason == EndReason::error);
    CHECK(e.code == std::errc::connection_refused);
    CHECK(e.message.find(a.to_string() + ": connection refused") != std::string::npos);
    CHECK(e.message.find(b.to_string() + ": connection refused") != std::string::npos);
    CHECK(e.message.find("every address failed") != std::string::npos);
}

TEST_CASE("connect_any: con_timeout bounds every attempt together") {
    Loop loop;
    BlackholeListener h4 = blackhole_listener(Family::ipv4);
    BlackholeListener h6 = blackhole_listener(Family::ipv6);
    REQUIRE(h4.full);
    REQUIRE(h6.full);
    NetConf conf;
    conf.con_timeout = 600ms;
    const auto t0 = Clock::now();
    Client c = connect_any(loop, {h6.address, h4.address}, conf);
    run_until(
        loop, [&] { return c.end->count == 1; }, "timed out");
    const auto waited = Clock::now() - t0;
    CHECK(waited >= 600ms);
    CHECK(waited < 2s);
    CAPTURE(c.end->info.error.message);
    CHECK(c.end->info.reason == EndReason::timeout);
    CHECK(c.end->info.error == errc::connect_timeout);
    CHECK(c.end->info.error.message.find(h6.address.to_string() + ": no answer") !=
          std::string::npos);
    CHECK(c.end->info.error.message.find(h4.address.to_string() + ": no answer") !=
          std::string::npos);
}

TEST_CASE("connect_any: the families are interleaved, the first one's first") {
    // Three refused IPv4 addresses and one IPv6 server: the IPv6 one is tried second, so the
    // connection is up after one refusal, not three.
    Loop loop;
    auto server = echo(loop, Family::ipv6);
    std::vector<Address> to;
    for (int i = 0; i < 3; ++i) to.push_back(closed_tcp_port(loop, Family::ipv4));
    to.push_back(server->local_address());
    Client c = connect_any(loop, to);
    run_until(
        loop, [&] { return c.pipe->is_up() || c.end->count > 0; }, "up");
    CHECK(c.pipe->peer_address() == server->local_address());
}

TEST_CASE("connect_any: closing while attempts run ends them all, and bad input is refused") {
    Loop loop;
    BlackholeListener hole = blackhole_listener(Family::ipv4);
    REQUIRE(hole.full);
    Client c = connect_any(loop, {hole.address});
    run_for(loop, 50ms);
    c.pipe->close();
    run_until(
        loop, [&] { return c.end->count == 1; }, "closed");
    CHECK(c.end->info.reason == EndReason::local_close);

    auto none = Pipe::connect_any(loop, {});
    REQUIRE(!none);
    CHECK(none.error() == errc::invalid_address);
    auto zero = Pipe::connect_any(loop, {Address::ip("127.0.0.1", 0).value()});
    REQUIRE(!zero);
    CHECK(zero.error() == errc::invalid_address);
}

TEST_CASE("connect retries: backoff between tries, the count in the error, a late server") {
    Loop loop;
    const Address closed = closed_tcp_port(loop, Family::ipv4);
    NetConf conf;
    conf.connect_retries = 2;
    conf.retry_backoff = 100ms;
    const auto t0 = Clock::now();
    auto p = must(Pipe::connect(loop, closed, conf));
    auto end = watch_end(*p);
    run_until(
        loop, [&] { return end->count == 1; }, "all tries failed");
    const auto waited = Clock::now() - t0;
    CHECK(waited >= 300ms);  // 100 ms, then 200 ms
    CHECK(waited < 2s);
    CAPTURE(end->info.error.message);
    CHECK(end->info.error.code == std::errc::connection_refused);
    CHECK(end->info.error.message.find("3 tries; NetConf.connect_retries") != std::string::npos);

    // A server that comes up during the backoff is reached by the next try.
    const Address later = closed_tcp_port(loop, Family::ipv6);
    PipePtr server;
    loop.call_later(150ms, [&] { server = must(Pipe::listen(loop, later), "late listen"); });
    conf.connect_retries = 5;
    auto q = must(Pipe::connect(loop, later, conf));
    run_until(
        loop, [&] { return q->is_up() || q->ended(); }, "up on a retry");
    CHECK(q->is_up());
    CHECK(q->peer_address() == later);

    NetConf bad;
    bad.connect_retries = -1;
    CHECK(bad.validate(Transport::tcp) == errc::invalid_config);
    bad.connect_retries = 1;
    bad.retry_backoff = 0ms;
    CHECK(bad.validate(Transport::tcp) == errc::invalid_config);
}
