// UDP pipes over loopback: datagram round trips, sources, replies by address, size limits,
// statistics and pause/resume.
#include "pipe_support.hpp"

#include <algorithm>

using namespace pipeworks;
using namespace pw_test;

namespace {

// A UDP server on loopback that answers every datagram to its source.
PipePtr udp_echo(Loop& loop, Family f) {
    auto s = must(Pipe::udp(loop, lo(f)), "udp server");
    s->on_message([](Pipe& p, const Message& m) { CHECK(!p.send_to(m.data, m.from)); });
    return s;
}

}  // namespace

TEST_CASE("UDP: many datagrams make the round trip, each one intact") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto server = udp_echo(loop, f);
        auto client = must(Pipe::udp(loop, lo(f), server->local_address()), "udp client");
        CHECK(client->kind() == PipeKind::udp);
        CHECK(client->transport() == Transport::udp);
        CHECK(client->peer_address() == server->local_address());
        CHECK(client->local_address().same_host(lo(f)));
        CHECK(client->local_address().port() != 0);
        auto got = collect(*client);
        std::vector<std::string> sent;
        // In windows, so the socket buffers never have to hold more than a few datagrams.
        for (int w = 0; w < 10; ++w) {
            for (int i = 0; i < 20; ++i) {
                std::string m = "dgram-" + std::to_string(w) + "-" + std::to_string(i) + "-" +
                                payload(static_cast<std::size_t>(i * 50), w * 100 + i);
                sent.push_back(m);
                REQUIRE(!client->send(m));
            }
            run_until(
                loop, [&] { return got->msgs.size() >= sent.size(); }, "window echoed");
        }
        REQUIRE(got->msgs.size() == sent.size());
        CHECK(got->msgs == sent);  // loopback keeps the order of one socket's datagrams
        for (const auto& a : got->from) CHECK(a == server->local_address());
    }
}

TEST_CASE("UDP: the largest datagram arrives intact and one byte more is message_too_large") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto rx = must(Pipe::udp(loop, lo(f)), "receiver");
        auto tx = must(Pipe::udp(loop, lo(f)), "sender");
        auto got = collect(*rx);
        // IPv4: 65535 - 20 (IP header) - 8 (UDP header). IPv6: 65535 - 8 (no IP header counted).
        const std::size_t max = f == Family::ipv4 ? 65507 : 65527;
        const std::string big = payload(max, 5);
        REQUIRE(!tx->send_to(big, rx->local_address()));
        run_until(
            loop, [&] { return got->msgs.size() == 1; }, "largest datagram");
        CHECK(got->msgs[0] == big);

        const std::string too_big = payload(max + 1, 6);
        auto e = tx->send_to(too_big, rx->local_address());
        CHECK(e == errc::message_too_large);
        CHECK(e.message.find(rx->local_address().to_string()) != std::string::npos);
        CHECK(tx->send_to(payload(200000), rx->local_address()) == errc::message_too_large);
        CHECK(tx->stats().msgs_out == 1);
        CHECK(tx->stats().bytes_out == max);
        // The pipe stays usable.
        CHECK(tx->is_up());
        REQUIRE(!tx->send_to("small", rx->local_address()));
        run_until(
            loop, [&] { return got->msgs.size() == 2; }, "small datagram");
        CHECK(got->msgs[1] == "small");
    }
}

TEST_CASE("UDP: a 65508-byte datagram to an IPv4 address is refused before sending") {
    Loop loop;
    auto tx = must(Pipe::udp(loop, lo(Family::ipv4)), "sender");
    auto e = tx->send_to(std::string(65508, 'x'), lo(Family::ipv4, 9));
    CHECK(e == errc::message_too_large);
    CHECK(e.code.category() == pipeworks_category());
    CHECK(tx->stats().msgs_out == 0);
}

TEST_CASE("UDP: send without a destination is not_connected; send_to still works") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto rx = must(Pipe::udp(loop, lo(f)), "receiver");
        auto tx = must(Pipe::udp(loop, lo(f)), "no destination");
        CHECK(tx->peer_address().empty());
        auto e = tx->send("nowhere");
        CHECK(e == errc::not_connected);
        CHECK_FALSE(e.message.empty());
        CHECK(tx->stats().msgs_out == 0);
        auto got = collect(*rx);
        REQUIRE(!tx->send_to("somewhere", rx->local_address()));
        run_until(
            loop, [&] { return got->msgs.size() == 1; }, "send_to");
        CHECK(got->msgs[0] == "somewhere");
        CHECK(got->from[0] == tx->local_address());
        // A destination without a port is refused at once.
        CHECK(tx->send_to("x", lo(f)) == errc::invalid_address);
    }
}

TEST_CASE("UDP: one pipe receives from any source and tells the sources apart") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto rx = must(Pipe::udp(loop, lo(f)), "receiver");
        auto a = must(Pipe::udp(loop, lo(f), rx->local_address()), "sender a");
        auto b = must(Pipe::udp(loop, lo(f), rx->local_address()), "sender b");
        REQUIRE(a->local_address() != b->local_address());
        auto got = collect(*rx);
        REQUIRE(!a->send("from a"));
        REQUIRE(!b->send("from b"));
        REQUIRE(!a->send("from a again"));
        run_until(
            loop, [&] { return got->msgs.size() == 3; }, "three datagrams");
        int from_a = 0, from_b = 0;
        for (std::size_t i = 0; i < got->msgs.size(); ++i) {
            if (got->msgs[i].starts_with("from a")) {
                CHECK(got->from[i] == a->local_address());
                ++from_a;
            } else {
                CHECK(got->msgs[i] == "from b");
                CHECK(got->from[i] == b->local_address());
                ++from_b;
            }
        }
        CHECK(from_a == 2);
        CHECK(from_b == 1);
    }
}

TEST_CASE("UDP: a server answers each client at its own address") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto server = must(Pipe::udp(loop, lo(f)), "server");
        std::vector<Address> seen;
        server->on_message([&](Pipe& p, const Message& m) {
            seen.push_back(m.from);
            CHECK(!p.send_to("reply to " + std::string(m.data), m.from));
        });
        std::vector<PipePtr> clients;
        std::vector<std::shared_ptr<Sink>> got;
        for (int i = 0; i < 4; ++i) {
            clients.push_back(must(Pipe::udp(loop, lo(f), server->local_address()), "udp client"));
            got.push_back(collect(*clients.back()));
        }
        for (int round = 0; round < 3; ++round)
            for (int i = 0; i < 4; ++i)
                REQUIRE(!clients[static_cast<std::size_t>(i)]->send("c" + std::to_string(i) + "r" +
                                                                    std::to_string(round)));
        run_until(
            loop,
            [&] {
                return std::all_of(got.begin(), got.end(),
                                   [](auto& g) { return g->msgs.size() == 3; });
            },
            "replies");
        CHECK(seen.size() == 12);
        for (std::size_t i = 0; i < clients.size(); ++i) {
            CAPTURE(i);
            REQUIRE(got[i]->msgs.size() == 3);
            for (int round = 0; round < 3; ++round)
                CHECK(got[i]->msgs[static_cast<std::size_t>(round)] ==
                      "reply to c" + std::to_string(i) + "r" + std::to_string(round));
            for (const auto& from : got[i]->from) CHECK(from == server->local_address());
            CHECK(std::count(seen.begin(), seen.end(), clients[i]->local_address()) == 3);
        }
        run_for(loop, 50ms);
        for (auto& g : got) CHECK(g->msgs.size() == 3);  // nobody got another's reply
    }
}

TEST_CASE("UDP: stats count datagrams and bytes exactly") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto rx = must(Pipe::udp(loop, lo(f)), "receiver");
        auto tx = must(Pipe::udp(loop, lo(f), rx->local_address()), "sender");
        auto got = collect(*rx);
        std::size_t bytes = 0;
        for (int i = 1; i <= 25; ++i) {
            std::string m(static_cast<std::size_t>(i * 3), 'u');
            bytes += m.size();
            REQUIRE(!tx->send(m));
        }
        run_until(
            loop, [&] { return got->msgs.size() == 25; }, "datagrams");
        auto t = tx->stats();
        auto r = rx->stats();
        CHECK(t.msgs_out == 25);
        CHECK(t.bytes_out == bytes);
        CHECK(t.msgs_in == 0);
        CHECK(t.bytes_in == 0);
        CHECK(r.msgs_in == 25);
        CHECK(r.bytes_in == bytes);
        CHECK(r.msgs_out == 0);
        CHECK(r.bytes_out == 0);
        CHECK(r.dropped == 0);
        CHECK(t.rate_out > 0);
        CHECK(r.rate_in > 0);
        CHECK(r.rate_out == 0);
    }
}

TEST_CASE("UDP: a paused pipe receives nothing until resumed, then gets the datagrams") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto rx = must(Pipe::udp(loop, lo(f)), "receiver");
        auto tx = must(Pipe::udp(loop, lo(f), rx->local_address()), "sender");
        auto got = collect(*rx);
        rx->pause();
        CHECK(rx->paused());
        for (int i = 0; i < 5; ++i) REQUIRE(!tx->send("p" + std::to_string(i)));
        run_for(loop, 200ms);
        CHECK(got->msgs.empty());
        CHECK(rx->stats().msgs_in == 0);
        rx->resume();
        run_until(
            loop, [&] { return got->msgs.size() == 5; }, "datagrams after resume");
        CHECK(got->msgs == std::vector<std::string>{"p0", "p1", "p2", "p3", "p4"});
    }
}

TEST_CASE("UDP: up fires once, on the next iteration, and close ends the pipe") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto p = must(Pipe::udp(loop, lo(f)), "udp");
        int ups = 0;
        p->on_up([&](Pipe&) { ++ups; });
        CHECK(ups == 0);
        CHECK(p->is_up());
        run_until(
            loop, [&] { return ups == 1; }, "udp up");
        run_for(loop, 50ms);
        CHECK(ups == 1);
        auto end = watch_end(*p);
        p->close();
        run_until(
            loop, [&] { return end->count == 1; }, "udp end");
        CHECK(end->info.reason == EndReason::local_close);
        CHECK(p->send_to("x", lo(f, 9)) == errc::pipe_ended);
        CHECK(p->native_handle() == -1);
    }
}
