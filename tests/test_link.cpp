// Linking and relays: link / unlink / relay, dispatch order, backpressure, half-close, reset
// propagation, UDP links, over real loopback sockets.
#include "support.hpp"
#include "transport/pipe_impl.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

using namespace pipeworks;
using namespace pw_test;

namespace {

NetConf framed(const Framer& f) {
    NetConf c;
    c.framer = f;
    return c;
}

// A relay server: every accepted pipe is relayed to a new connection to `upstream`.
struct Relay {
    PipePtr server;
    std::vector<PipePtr> down, up;  // accepted pipes, and their upstream pipes
    Relay(Loop& loop, const Address& upstream, Family f, const NetConf& conf = {}) {
        server = must(Pipe::listen(loop, lo(f), conf), "relay listen");
        server->on_accept([this, &loop, upstream, conf](Pipe&, const PipePtr& c) {
            auto u = must(Pipe::connect(loop, upstream, conf), "relay connect");
            REQUIRE(!Pipe::relay(c, u));
            down.push_back(c);
            up.push_back(u);
        });
    }
};

// A TCP server that echoes what it receives.
PipePtr echo_server(Loop& loop, Family f, const NetConf& conf = {}) {
    auto s = must(Pipe::listen(loop, lo(f), conf), "echo listen");
    s->on_message([](Pipe& p, const Message& m) { CHECK(!p.send(m.data)); });
    return s;
}

}  // namespace

TEST_CASE("a TCP relay carries both directions over IPv4 and IPv6") {
    for (Family f : {Family::ipv4, Family::ipv6}) {
        CAPTURE(static_cast<int>(f));
        Loop loop;
        auto upstream = echo_server(loop, f);
        Relay relay(loop, upstream->local_address(), f);
        auto client = must(Pipe::connect(loop, relay.server->local_address()));
        std::string got;
        client->on_message([&](Pipe&, const Message& m) { got += m.data; });
        std::string sent;
        for (int i = 0; i < 100; ++i) sent += "message " + std::to_string(i) + ";";
        REQUIRE(!client->send(sent));
        run_until(
            loop, [&] { return got.size() == sent.size(); }, "echo through the relay");
        CHECK(got == sent);
        REQUIRE(relay.down.size() == 1);
        CHECK(relay.down[0]->links().size() == 1);
        CHECK(relay.down[0]->links()[0] == relay.up[0]);
        // Relayed pipes keep no implicit queue: the links take their messages.
        CHECK(relay.down[0]->queued() == 0);
        CHECK(relay.up[0]->queued() == 0);
    }
}

TEST_CASE("dispatch order: linked pipes, then callbacks, then queues") {
    Loop loop;
    auto sink = must(Pipe::listen(loop, lo(Family::ipv4)));
    std::string at_sink;
    sink->on_message([&](Pipe&, const Message& m) { at_sink += m.data; });
    auto src_server = must(Pipe::listen(loop, lo(Family::ipv4)));
    auto target = must(Pipe::connect(loop, sink->local_address()));
    PipePtr src;
    std::vector<std::string> order;
    src_server->on_accept([&](Pipe&, const PipePtr& c) {
        src = c;
        REQUIRE(!c->link(target));
        c->on_message([&](Pipe&, const Message&) {
            // The link has already sent the message on.
            CHECK(target->stats().msgs_out == 1);
            order.push_back("callback");
        });
        c->subscribe(Pattern::any(), {},
                     [&](Pipe&, const Message&) { order.push_back("subscription"); });
    });
    auto client = must(Pipe::connect(loop, src_server->local_address()));
    REQUIRE(!client->send("x"));
    run_until(
        loop, [&] { return at_sink == "x" && order.size() == 2; }, "dispatch");
    CHECK(order == std::vector<std::string>{"callback", "subscription"});

    // unlink stops the forwarding; the callbacks go on.
    REQUIRE(src->unlink(target));
    CHECK_FALSE(src->unlink(target));
    CHECK(src->links().empty());
    REQUIRE(!client->send("y"));
    run_until(
        loop, [&] { return order.size() == 4; }, "after unlink");
    run_for(loop, 50ms);
    CHECK(at_sink == "x");
}

TEST_CASE("link refuses what cannot work, with an error naming why") {
    Loop loop;
    auto server = must(Pipe::listen(loop, lo(Family::ipv4)));
    auto a = must(Pipe::connect(loop, server->local_address()));
    auto b = must(Pipe::connect(loop, server->local_address()));
    auto udp_nodest = must(Pipe::udp(loop, lo(Family::ipv4)));
    auto udp_peer = must(Pipe::udp(loop, lo(Family::ipv4)));
    auto udp_dest = must(Pipe::udp(loop, lo(Family::ipv4), udp_peer->local_address()));

    CHECK(a->link(a) == errc::invalid_config);
    CHECK(a->link(server) == errc::wrong_pipe_kind);
    CHECK(server->link(a) == errc::wrong_pipe_kind);
    CHECK(a->link(nullptr) == errc::invalid_config);
    Error e = a->link(udp_nodest);
    CHECK(e == errc::not_connected);
    CHECK(e.message.find("destination") != std::string::npos);
    e = a->link(udp_dest);  // TCP (raw) to UDP
    CHECK(e == errc::invalid_config);
    CHECK(e.message.find("framer") != std::string::npos);
    e = udp_dest->link(a);  // UDP to TCP (raw)
    CHECK(e == errc::invalid_config);
    CHECK(e.message.find("framer") != std::string::npos);
    CHECK(Pipe::relay(a, udp_dest) == errc::invalid_config);
    CHECK(a->links().empty());  // a failed relay leaves no half of it

    CHECK(!a->link(b));
    CHECK(!a->link(b));  // twice is once
    CHECK(a->links().size() == 1);
    CHECK(!udp_nodest->link(udp_dest));  // UDP to UDP with a destination

    Loop other;
    auto far_server = must(Pipe::listen(other, lo(Family::ipv4)));
    auto far = must(Pipe::connect(other, far_server->local_address()));
    CHECK(a->link(far) == errc::invalid_config);

    b->close();
    run_until(
        loop, [&] { return b->ended(); }, "b ends");
    CHECK(a->links().empty());  // the link went with b
    CHECK(a->link(b) == errc::pipe_ended);
    CHECK(a->is_up());  // a one-way link does not pass the end on
}

TEST_CASE("backpressure: a stalled consumer stops the producer; memory stays bounded") {
    Loop loop;
    NetConf conf;
    conf.high_watermark = 256 * 1024;
    conf.low_watermark = 64 * 1024;
    // The consumer's server pipe does not read until told to.
    auto sink = must(Pipe::listen(loop, lo(Family::ipv4)));
    PipePtr sink_conn;
    std::size_t sunk = 0;
    sink->on_accept([&](Pipe&, const PipePtr& c) {
        sink_conn = c;
        c->pause();
    });
    sink->on_message([&](Pipe&, const Message& m) { sunk += m.data.size(); });
    Relay relay(loop, sink->local_address(), Family::ipv4, conf);
    auto producer = must(Pipe::connect(loop, relay.server->local_address()));
    run_until(
        loop, [&] { return producer->is_up() && relay.up.size() == 1 && sink_conn; }, "relay up");
    PipePtr to_sink = relay.up[0];
    PipePtr from_producer = relay.down[0];

    const std::size_t total = 64 * 1024 * 1024;
    const std::string chunk(64 * 1024, 'p');
    std::size_t produced = 0;
    std::size_t max_queued = 0;
    // The producer writes whenever its own queue is low, as fast as the relay takes it.
    auto pump = [&] {
        while (produced < total && producer->write_queue_bytes() < 512 * 1024) {
            REQUIRE(!producer->send(chunk));
            produced += chunk.size();
        }
        max_queued = std::max(max_queued, to_sink->write_queue_bytes());
        return false;
    };
    // Stalled: once the target passes its watermark (after the kernel's socket buffers fill),
    // the relay stops reading the producer.
    auto pump_for = [&](std::chrono::milliseconds d) { run_for(loop, d, pump); };
    run_until(
        loop,
        [&] {
            pump();
            return from_producer->stats().bytes_in > 2 * 1024 * 1024;
        },
        "the relay reads");
    pump_for(300ms);
    std::size_t in_before = from_producer->stats().bytes_in;
    pump_for(300ms);
    // The relay forwards without copying: what waits for the stalled consumer is kept read
    // blocks (the buffers the relay read into), not copies of them.
    {
        auto& impl = detail::PipeImpl::of(*to_sink);
        std::size_t kept = 0, kept_bytes = 0;
        for (const auto* q : {&impl.segs_, &impl.inflight_segs_})
            for (const auto& seg : *q)
                if (seg.block) {
                    ++kept;
                    kept_bytes += seg.n;
                }
        CHECK(kept > 0);
        CHECK(impl.pending_.empty());
        MESSAGE(kept << " read blocks kept, " << kept_bytes << " bytes; inflight string "
                     << impl.inflight_.size());
    }
    // Nothing more was read from the producer while the consumer is stalled...
    CHECK(from_producer->stats().bytes_in == in_before);
    // ...and the relay's memory is bounded by the watermark plus one read.
    CHECK(max_queued <= conf.high_watermark + conf.reader_limit);
    MESSAGE("most bytes queued toward the stalled consumer: " << max_queued);

    // The consumer reads again: everything arrives, and the queue never passed the bound.
    sink_conn->resume();
    run_until(
        loop,
        [&] {
            pump();
            return sunk == total;
        },
        "every byte reaches the consumer", 60s);
    CHECK(sunk == total);
    CHECK(max_queued <= conf.high_watermark + conf.reader_limit);
    CHECK(detail::PipeImpl::of(*to_sink).segs_.empty());
}

TEST_CASE("half-close: the client's FIN passes through and the server's reply still arrives") {
    for (Family f : {Family::ipv4, Family::ipv6}) {
        CAPTURE(static_cast<int>(f));
        // The upstream server is a plain blocking socket in a thread: it reads until EOF, then
        // answers and closes (what `nc` does with a request piped in).
        const int lfd = ::socket(f == Family::ipv4 ? AF_INET : AF_INET6, SOCK_STREAM, 0);
        REQUIRE(lfd >= 0);
        Address bind_at = lo(f);
        const socklen_t len = f == Family::ipv4 ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
        REQUIRE(::bind(lfd, bind_at.sockaddr(), len) == 0);
        REQUIRE(::listen(lfd, 4) == 0);
        sockaddr_storage ss{};
        socklen_t sl = sizeof ss;
        REQUIRE(::getsockname(lfd, reinterpret_cast<sockaddr*>(&ss), &sl) == 0);
        Address upstream = Address::from_sockaddr(reinterpret_cast<sockaddr*>(&ss));
        std::atomic<bool> upstream_saw_eof{false};
        std::string upstream_got;
        std::thread server([&] {
            timeval tv{5, 0};
            int c = ::accept(lfd, nullptr, nullptr);
            if (c < 0) return;
            ::setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
            char buf[4096];
            for (;;) {
                ssize_t n = ::recv(c, buf, sizeof buf, 0);
                if (n <= 0) {
                    upstream_saw_eof = n == 0;
                    break;
                }
                upstream_got.append(buf, static_cast<std::size_t>(n));
            }
            std::string reply = "reply to " + upstream_got;
            (void)::send(c, reply.data(), reply.size(), MSG_NOSIGNAL);
            ::close(c);
        });

        Loop loop;
        Relay relay(loop, upstream, f);
        auto client = must(Pipe::connect(loop, relay.server->local_address()));
        run_until(
            loop, [&] { return client->is_up(); }, "client up");
        // The client sends its request and shuts down its write side.
        REQUIRE(::send(client->native_handle(), "request", 7, MSG_NOSIGNAL) == 7);
        REQUIRE(::shutdown(client->native_handle(), SHUT_WR) == 0);
        std::string got;
        client->on_message([&](Pipe&, const Message& m) { got += m.data; });
        std::optional<EndInfo> client_end, down_end, up_end;
        client->on_end([&](Pipe&, const EndInfo& e) { client_end = e; });
        run_until(
            loop, [&] { return relay.up.size() == 1; }, "relayed");
        relay.down[0]->on_end([&](Pipe&, const EndInfo& e) { down_end = e; });
        relay.up[0]->on_end([&](Pipe&, const EndInfo& e) { up_end = e; });
        run_until(
            loop, [&] { return client_end && down_end && up_end; }, "everything ends");
        server.join();
        ::close(lfd);
        CHECK(upstream_saw_eof);
        CHECK(upstream_got == "request");
        CHECK(got == "reply to request");
        CHECK(client_end->reason == EndReason::peer_close);
        CHECK(down_end->reason == EndReason::peer_close);
        CHECK(up_end->reason == EndReason::peer_close);
    }
}

TEST_CASE("a reset on one side resets the other side at once") {
    Loop loop;
    auto upstream = must(Pipe::listen(loop, lo(Family::ipv4)));
    std::optional<EndInfo> upstream_end;
    upstream->on_accept([&](Pipe&, const PipePtr& c) {
        c->on_end([&](Pipe&, const EndInfo& e) { upstream_end = e; });
    });
    Relay relay(loop, upstream->local_address(), Family::ipv4);
    NetConf abortive;
    abortive.linger = std::chrono::seconds(0);
    auto client = must(Pipe::connect(loop, relay.server->local_address(), abortive));
    REQUIRE(!client->send("hi"));
    run_until(
        loop, [&] { return relay.up.size() == 1 && relay.up[0]->is_up(); }, "relay up");
    std::optional<EndInfo> down_end, up_end;
    relay.down[0]->on_end([&](Pipe&, const EndInfo& e) { down_end = e; });
    relay.up[0]->on_end([&](Pipe&, const EndInfo& e) { up_end = e; });
    run_until(
        loop, [&] { return upstream_end.has_value() || relay.up[0]->stats().msgs_out == 1; },
        "forwarded");
    client->close();  // linger 0: a reset
    run_until(
        loop, [&] { return down_end && up_end && upstream_end; }, "ends");
    CHECK(down_end->reason == EndReason::peer_reset);
    CHECK(up_end->reason == EndReason::peer_reset);
    CHECK(up_end->error.message.find("reset") != std::string::npos);
    CHECK(upstream_end->reason == EndReason::peer_reset);
}

TEST_CASE("closing one side of a relay closes the other after its queued bytes") {
    Loop loop;
    auto upstream = must(Pipe::listen(loop, lo(Family::ipv4)));
    std::string at_upstream;
    std::optional<EndInfo> upstream_end;
    upstream->on_message([&](Pipe&, const Message& m) { at_upstream += m.data; });
    upstream->on_accept([&](Pipe&, const PipePtr& c) {
        c->on_end([&](Pipe&, const EndInfo& e) { upstream_end = e; });
    });
    Relay relay(loop, upstream->local_address(), Family::ipv4);
    auto client = must(Pipe::connect(loop, relay.server->local_address()));
    REQUIRE(!client->send("last words"));
    run_until(
        loop, [&] { return relay.up.size() == 1; }, "relayed");
    std::optional<EndInfo> up_end;
    relay.up[0]->on_end([&](Pipe&, const EndInfo& e) { up_end = e; });
    run_until(
        loop, [&] { return relay.up[0]->stats().msgs_out == 1; }, "forwarded");
    relay.down[0]->close();
    run_until(
        loop, [&] { return up_end && upstream_end; }, "the other side closes");
    CHECK(up_end->reason == EndReason::local_close);
    CHECK(up_end->error.message.find("relayed pipe") != std::string::npos);
    CHECK(at_upstream == "last words");
    CHECK(upstream_end->reason == EndReason::peer_close);
}

TEST_CASE("UDP to UDP relay, IPv4 and IPv6") {
    for (Family f : {Family::ipv4, Family::ipv6}) {
        CAPTURE(static_cast<int>(f));
        Loop loop;
        auto echo = must(Pipe::udp(loop, lo(f)));
        echo->on_message([](Pipe& p, const Message& m) { CHECK(!p.send_to(m.data, m.from)); });
        auto client = must(Pipe::udp(loop, lo(f)));
        // The relay's two pipes: one faces the client, one faces the echo server.
        auto facing_client = must(Pipe::udp(loop, lo(f), client->local_address()));
        auto facing_echo = must(Pipe::udp(loop, lo(f), echo->local_address()));
        REQUIRE(!Pipe::relay(facing_client, facing_echo));
        std::vector<std::string> got;
        client->on_message([&](Pipe&, const Message& m) {
            got.emplace_back(m.data);
            CHECK(m.from == facing_client->local_address());
        });
        REQUIRE(!client->send_to("d1", facing_client->local_address()));
        REQUIRE(!client->send_to("d2", facing_client->local_address()));
        run_until(
            loop, [&] { return got.size() == 2; }, "datagrams through the relay");
        std::sort(got.begin(), got.end());
        CHECK(got == std::vector<std::string>{"d1", "d2"});
    }
}

TEST_CASE("TCP to UDP relay with framing; a message too large for a datagram is an error") {
    Loop loop;
    auto echo = must(Pipe::udp(loop, lo(Family::ipv4)));
    echo->on_message([](Pipe& p, const Message& m) { CHECK(!p.send_to(m.data, m.from)); });
    auto server = must(Pipe::listen(loop, lo(Family::ipv4), framed(Framer::message())));
    std::vector<PipePtr> keep;
    server->on_accept([&](Pipe&, const PipePtr& c) {
        auto u = must(Pipe::udp(loop, lo(Family::ipv4), echo->local_address()));
        REQUIRE(!Pipe::relay(c, u));
        keep.push_back(u);
    });
    auto client = must(Pipe::connect(loop, server->local_address(), framed(Framer::message())));
    std::vector<std::string> got;
    client->on_message([&](Pipe&, const Message& m) { got.emplace_back(m.data); });
    REQUIRE(!client->send("first"));
    REQUIRE(!client->send(""));
    REQUIRE(!client->send("third"));
    run_until(
        loop, [&] { return got.size() == 3; }, "messages as datagrams and back");
    CHECK(got == std::vector<std::string>{"first", "", "third"});

    std::optional<EndInfo> end;
    client->on_end([&](Pipe&, const EndInfo& e) { end = e; });
    PipePtr accepted = server->clients().at(0);
    std::optional<EndInfo> accepted_end;
    accepted->on_end([&](Pipe&, const EndInfo& e) { accepted_end = e; });
    REQUIRE(!client->send(std::string(70000, 'L')));
    run_until(
        loop, [&] { return accepted_end && end; }, "oversized message ends the relay");
    CHECK(accepted_end->reason == EndReason::error);
    CHECK(accepted_end->error == errc::message_too_large);
    CHECK(accepted_end->error.message.find("forward") != std::string::npos);
}
