#include "support.hpp"

using namespace pipeworks;
using namespace pw_test;

namespace {

// A server that echoes every message back to its sender.
PipePtr echo_server(Loop& loop, Transport t, Family f) {
    if (t == Transport::tcp) {
        auto s = must(Pipe::listen(loop, lo(f)), "listen");
        s->on_message([](Pipe& p, const Message& m) { CHECK(!p.send(m.data)); });
        return s;
    }
    auto s = must(Pipe::udp(loop, lo(f)), "udp");
    s->on_message([](Pipe& p, const Message& m) { CHECK(!p.send_to(m.data, m.from)); });
    return s;
}

}  // namespace

TEST_CASE("TCP echo round trip over IPv4 and IPv6") {
    for (Family f : {Family::ipv4, Family::ipv6}) {
        CAPTURE(static_cast<int>(f));
        Loop loop;
        auto server = echo_server(loop, Transport::tcp, f);
        auto client = must(Pipe::connect(loop, server->local_address()), "connect");
        int ups = 0;
        client->on_up([&](Pipe&) { ++ups; });
        REQUIRE(!client->send("hello"));  // queued while connecting
        std::string got;
        client->on_message([&](Pipe&, const Message& m) {
            got += m.data;
            CHECK(m.from == server->local_address());
        });
        run_until(
            loop, [&] { return got == "hello"; }, "echo");
        CHECK(ups == 1);
        CHECK(client->stats().bytes_in == 5);
        CHECK(client->stats().bytes_out == 5);
        CHECK(client->peer_address() == server->local_address());
        bool ended = false;
        client->on_end([&](Pipe&, const EndInfo& e) {
            ended = true;
            CHECK(e.reason == EndReason::local_close);
        });
        client->close();
        run_until(
            loop, [&] { return ended; }, "end");
        CHECK(client->ended());
    }
}

TEST_CASE("UDP echo round trip over IPv4 and IPv6, with recv") {
    for (Family f : {Family::ipv4, Family::ipv6}) {
        CAPTURE(static_cast<int>(f));
        Loop loop;
        auto server = echo_server(loop, Transport::udp, f);
        auto client = must(Pipe::udp(loop, {}, server->local_address()), "udp client");
        REQUIRE(!client->send("ping"));
        bool done = false;
        client->recv([&](Pipe&, RecvResult& r) {
            REQUIRE(r);
            CHECK(r.message.data == "ping");
            CHECK(r.message.from == server->local_address());
            done = true;
        });
        run_until(
            loop, [&] { return done; }, "udp echo");
    }
}
