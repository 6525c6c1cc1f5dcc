// How pipes end: the reasons (local close, peer FIN, peer reset), exactly one end per pipe even
// with repeated or nested close() calls, no callback after the end, and close(done) ordering.
#include "pipe_support.hpp"

#include <uv.h>

using namespace pipeworks;
using namespace pw_test;

TEST_CASE("End: close() ends with local_close and the peer sees peer_close") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto pair = tcp_pair(loop, f);
        auto client_end = watch_end(*pair.client);
        auto peer_end = watch_end(*pair.accepted);
        CHECK(pair.client->is_up());
        CHECK_FALSE(pair.client->end_info().has_value());
        pair.client->close();
        CHECK(pair.client->ending());
        CHECK_FALSE(pair.client->ended());
        CHECK_FALSE(pair.client->is_up());
        REQUIRE(pair.client->end_info().has_value());
        CHECK(pair.client->end_info()->reason == EndReason::local_close);
        run_until(
            loop, [&] { return client_end->count == 1 && peer_end->count == 1; }, "both end");
        CHECK(client_end->info.reason == EndReason::local_close);
        CHECK_FALSE(client_end->info.error);
        CHECK(client_end->ended_flag_in_cb);
        CHECK(pair.client->ended());
        CHECK_FALSE(pair.client->ending());
        CHECK(pair.client->native_handle() == -1);
        CHECK(peer_end->info.reason == EndReason::peer_close);
        CHECK_FALSE(peer_end->info.error);
        CHECK(pair.accepted->end_info()->reason == EndReason::peer_close);
        run_for(loop, 50ms);
        CHECK(client_end->count == 1);
        CHECK(peer_end->count == 1);
    }
}

TEST_CASE("End: a peer closing with linger 0 is seen as peer_reset") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        for (bool client_resets : {true, false}) {
            CAPTURE(client_resets);
            Loop loop;
            NetConf reset;
            reset.linger = std::chrono::seconds(0);
            auto pair = client_resets ? tcp_pair(loop, f, {}, reset) : tcp_pair(loop, f, reset);
            Pipe& closer = client_resets ? *pair.client : *pair.accepted;
            Pipe& other = client_resets ? *pair.accepted : *pair.client;
            auto closer_end = watch_end(closer);
            auto other_end = watch_end(other);
            // Some traffic first, so the reset comes on a connection in use.
            auto got = collect(other);
            REQUIRE(!closer.send("before the reset"));
            run_until(
                loop, [&] { return got->data == "before the reset"; }, "traffic");
            closer.close();
            run_until(
                loop, [&] { return closer_end->count == 1 && other_end->count == 1; }, "both end");
            CHECK(closer_end->info.reason == EndReason::local_close);
            CHECK(other_end->info.reason == EndReason::peer_reset);
            CHECK(other_end->info.error.code == std::error_code(UV_ECONNRESET, uv_category()));
            CHECK_FALSE(other_end->info.error.message.empty());
        }
    }
}

TEST_CASE("End: fires exactly once however often close() is called") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto pair = tcp_pair(loop, f);
        auto end = watch_end(*pair.client);
        int done1 = 0, done2 = 0;
        pair.client->close();
        pair.client->close([&](Pipe&) { ++done1; });
        pair.client->close();
        pair.client->close([&](Pipe&) { ++done2; });
        run_until(
            loop, [&] { return end->count == 1 && done1 == 1 && done2 == 1; }, "end");
        CHECK(end->info.reason == EndReason::local_close);
        pair.client->close();
        int done3 = 0;
        pair.client->close([&](Pipe&) { ++done3; });
        CHECK(done3 == 1);  // an ended pipe runs `done` at once
        run_for(loop, 50ms);
        CHECK(end->count == 1);
        CHECK(done1 == 1);
        CHECK(done2 == 1);
    }
}

TEST_CASE("End: close() from inside message, up and end callbacks ends the pipe once") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto server = must(Pipe::listen(loop, lo(f)), "listen");
        // Accepted pipes close themselves (twice) in their first message callback.
        int server_msgs = 0;
        server->on_message([&](Pipe& p, const Message&) {
            ++server_msgs;
            p.close();
            p.close();
        });
        std::vector<std::shared_ptr<Ends>> acc_ends;
        server->on_accept([&](Pipe&, const PipePtr& p) { acc_ends.push_back(watch_end(*p)); });

        // A client that closes itself in its up callback.
        auto c1 = must(Pipe::connect(loop, server->local_address()), "connect");
        int ups = 0;
        c1->on_up([&](Pipe& p) {
            ++ups;
            p.close();
            p.close();
        });
        auto c1_end = watch_end(*c1);
        run_until(
            loop, [&] { return c1_end->count == 1; }, "closed in up");
        CHECK(ups == 1);
        CHECK(c1_end->info.reason == EndReason::local_close);

        // A client that closes itself again from its end callback.
        auto c2 = must(Pipe::connect(loop, server->local_address()), "connect");
        int c2_ends = 0, c2_done = 0;
        c2->on_end([&](Pipe& p, const EndInfo&) {
            ++c2_ends;
            CHECK(p.ended());
            p.close();
            p.close([&](Pipe&) { ++c2_done; });
        });
        REQUIRE(!c2->send("trigger"));
        run_until(
            loop, [&] { return c2_ends == 1; }, "server closes c2's peer");
        CHECK(c2_done == 1);
        CHECK(c2->end_info()->reason == EndReason::peer_close);

        run_until(
            loop, [&] { return acc_ends.size() == 2 && acc_ends[1]->count == 1; },
            "accepted pipe closed in its message callback");
        CHECK(server_msgs == 1);
        CHECK(acc_ends[1]->info.reason == EndReason::local_close);
        run_for(loop, 50ms);
        CHECK(ups == 1);
        CHECK(c1_end->count == 1);
        CHECK(c2_ends == 1);
        for (auto& e : acc_ends) CHECK(e->count == 1);
    }
}

TEST_CASE("End: no message callback or handler runs after close() in a message callback") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        // UDP: a burst of datagrams is read in one batch; the first closes the pipe.
        auto rx = must(Pipe::udp(loop, lo(f)), "receiver");
        auto tx = must(Pipe::udp(loop, lo(f), rx->local_address()), "sender");
        int first_cb = 0, second_cb = 0, handled = 0, after_end = 0;
        bool ended = false;
        rx->on_message([&](Pipe& p, const Message&) {
            ++first_cb;
            if (ended) ++after_end;
            p.close();
        });
        rx->on_message([&](Pipe&, const Message&) { ++second_cb; });
        rx->subscribe(Pattern::any(), {}, [&](Pipe&, const Message&) {
            ++handled;
            if (ended) ++after_end;
        });
        rx->on_end([&](Pipe&, const EndInfo&) { ended = true; });
        rx->pause();  // let the whole burst wait in the socket
        for (int i = 0; i < 10; ++i) REQUIRE(!tx->send("burst " + std::to_string(i)));
        run_for(loop, 50ms);
        rx->resume();
        run_until(
            loop, [&] { return ended; }, "receiver ends");
        CHECK(first_cb == 1);
        CHECK(second_cb == 0);  // the pipe was ending before the next callback's turn
        CHECK(handled == 0);
        run_for(loop, 50ms);
        CHECK(after_end == 0);
        CHECK(first_cb == 1);

        // TCP: the peer keeps sending after the accepted pipe closed itself.
        auto pair = tcp_pair(loop, f);
        int msgs = 0;
        bool acc_ended = false;
        pair.accepted->on_message([&](Pipe& p, const Message&) {
            ++msgs;
            CHECK_FALSE(acc_ended);
            p.close();
        });
        pair.accepted->on_end([&](Pipe&, const EndInfo&) { acc_ended = true; });
        auto client_end = watch_end(*pair.client);
        REQUIRE(!pair.client->send("first"));
        run_until(
            loop, [&] { return acc_ended; }, "accepted ends");
        for (int i = 0; i < 5 && client_end->count == 0; ++i) {
            (void)pair.client->send("more after the end");
            run_for(loop, 10ms);
        }
        run_for(loop, 50ms);
        CHECK(msgs == 1);
    }
}

TEST_CASE("End: close(done) runs done after the end callbacks") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto pair = tcp_pair(loop, f);
        std::vector<std::string> order;
        pair.client->on_end([&](Pipe&, const EndInfo&) { order.push_back("end1"); });
        pair.client->on_end([&](Pipe&, const EndInfo&) { order.push_back("end2"); });
        pair.client->close([&](Pipe& p) {
            CHECK(p.ended());
            order.push_back("done");
        });
        CHECK(order.empty());  // the handle closes on a later iteration
        run_until(
            loop, [&] { return order.size() == 3; }, "close done");
        CHECK(order == std::vector<std::string>{"end1", "end2", "done"});

        // For a UDP pipe and a server as well.
        auto u = must(Pipe::udp(loop, lo(f)), "udp");
        std::vector<std::string> uorder;
        u->on_end([&](Pipe&, const EndInfo& e) {
            CHECK(e.reason == EndReason::local_close);
            uorder.push_back("end");
        });
        u->close([&](Pipe&) { uorder.push_back("done"); });
        run_until(
            loop, [&] { return uorder.size() == 2; }, "udp close done");
        CHECK(uorder == std::vector<std::string>{"end", "done"});

        std::vector<std::string> sorder;
        pair.server->on_end([&](Pipe&, const EndInfo&) { sorder.push_back("end"); });
        pair.server->close([&](Pipe&) { sorder.push_back("done"); });
        run_until(
            loop, [&] { return sorder.size() == 2; }, "server close done");
        CHECK(sorder == std::vector<std::string>{"end", "done"});
    }
}

TEST_CASE("End: a graceful close still ends promptly when the peer resets meanwhile") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        NetConf reset;
        reset.linger = std::chrono::seconds(0);
        NetConf slow_close;
        slow_close.con_timeout = 4000ms;  // also the bound on a graceful close's flush
        auto pair = tcp_pair(loop, f, reset, slow_close);
        pair.accepted->pause();
        auto end = watch_end(*pair.client);
        REQUIRE(!pair.client->send(payload(16 * 1024 * 1024, 60)));
        run_for(loop, 100ms);
        REQUIRE(pair.client->write_queue_bytes() > 0);
        pair.client->close();  // waits for the queued bytes
        run_for(loop, 100ms);
        CHECK(end->count == 0);
        auto start = std::chrono::steady_clock::now();
        pair.accepted->close();  // a reset: the queued bytes can never go out
        run_until(
            loop, [&] { return end->count == 1; }, "writer ends");
        auto took = std::chrono::steady_clock::now() - start;
        CHECK(took < 1000ms);
        CHECK(end->info.reason == EndReason::local_close);
    }
}

TEST_CASE("End: dropping the last PipePtr does not close an open pipe") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto pair = tcp_pair(loop, f);
        auto got = collect(*pair.accepted);
        auto peer_end = watch_end(*pair.accepted);
        std::weak_ptr<Pipe> weak = pair.client;
        auto client_end = watch_end(*pair.client);
        REQUIRE(!pair.client->send("still here"));
        pair.client.reset();
        run_until(
            loop, [&] { return got->data == "still here"; }, "data from the dropped pipe");
        run_for(loop, 100ms);
        CHECK(peer_end->count == 0);
        auto alive = weak.lock();
        REQUIRE(alive);
        CHECK(alive->is_up());
        alive->close();
        alive.reset();
        run_until(
            loop, [&] { return peer_end->count == 1; }, "peer sees the close");
        CHECK(client_end->count == 1);
        run_until(
            loop, [&] { return weak.expired(); }, "pipe released after its end");
    }
}

TEST_CASE("End: destroying the Loop closes its pipes without running their callbacks") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        int ends = 0, dones = 0;
        std::weak_ptr<Pipe> weak;
        {
            Loop loop;
            auto pair = tcp_pair(loop, f);
            for (auto* p : {pair.server.get(), pair.client.get(), pair.accepted.get()})
                p->on_end([&](Pipe&, const EndInfo&) { ++ends; });
            pair.client->close([&](Pipe&) { ++dones; });  // pending when the loop goes
            weak = pair.accepted;
        }
        CHECK(ends == 0);
        CHECK(dones == 0);
        CHECK(weak.expired());
    }
}
