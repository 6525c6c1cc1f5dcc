// Subscriptions (P2PD's queues): byte patterns, source filters, fan-out, handlers, recv with
// timeouts, bounded queues, the implicit subscription and the dispatch order.
#include "pipe_support.hpp"

using namespace pipeworks;
using namespace pw_test;

namespace {

// Sends each message from `tx` to `rx` and waits until `rx` has taken all of them in.
void send_all(Loop& loop, Pipe& tx, Pipe& rx, const std::vector<std::string>& msgs) {
    auto target = rx.stats().msgs_in + msgs.size();
    for (const auto& m : msgs) REQUIRE(!tx.send_to(m, rx.local_address()));
    run_until(
        loop, [&] { return rx.stats().msgs_in >= target; }, "datagrams received");
    CHECK(rx.stats().msgs_in == target);
}

// Everything queued on `sub`, oldest first.
std::vector<std::string> drain(Pipe& p, SubId sub) {
    std::vector<std::string> out;
    while (auto m = p.try_recv(sub)) out.push_back(m->data);
    return out;
}

using Strings = std::vector<std::string>;

Family other(Family f) {
    return f == Family::ipv4 ? Family::ipv6 : Family::ipv4;
}

}  // namespace

TEST_CASE("Pattern: contains matches anywhere, prefix only at the start, empty matches all") {
    CHECK(Pattern::contains("key").matches("a key here"));
    CHECK(Pattern::contains("key").matches("key"));
    CHECK_FALSE(Pattern::contains("key").matches("ke y"));
    CHECK(Pattern::prefix("key").matches("keyhole"));
    CHECK_FALSE(Pattern::prefix("key").matches("a key"));
    CHECK_FALSE(Pattern::prefix("key").matches("ke"));
    CHECK(Pattern::any().matches(""));
    CHECK(Pattern::any().matches("anything"));
    CHECK(Pattern::contains(std::string_view("a\0b", 3)).matches(std::string_view("xa\0by", 5)));
    CHECK_FALSE(Pattern::contains(std::string_view("a\0b", 3)).matches("ab"));
    CHECK_FALSE(Pattern::contains(".*").matches("anything"));  // bytes, not a regular expression
}

TEST_CASE("Subscriptions: unanchored and anchored patterns pick the matching messages") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto rx = must(Pipe::udp(loop, lo(f)), "receiver");
        auto tx = must(Pipe::udp(loop, lo(f)), "sender");
        SubId all = rx->subscribe(Pattern::any());
        SubId has_key = rx->subscribe(Pattern::contains("key"));
        SubId starts_key = rx->subscribe(Pattern::prefix("key"));
        SubId binary = rx->subscribe(Pattern::prefix(std::string_view("\x00\x01", 2)));
        CHECK(all != has_key);
        CHECK(has_key != starts_key);
        CHECK(all != all_messages);

        send_all(loop, *tx, *rx,
                 {"key-first", "a key inside", "no match", "keyhole", "ends with key",
                  std::string("\x00\x01key", 5)});
        CHECK(rx->queued(all) == 6);
        CHECK(rx->queued(has_key) == 5);
        CHECK(rx->queued(starts_key) == 2);
        CHECK(drain(*rx, starts_key) == Strings{"key-first", "keyhole"});
        CHECK(drain(*rx, has_key) == Strings{"key-first", "a key inside", "keyhole",
                                             "ends with key", std::string("\x00\x01key", 5)});
        CHECK(drain(*rx, binary) == Strings{std::string("\x00\x01key", 5)});
        CHECK(drain(*rx, all).size() == 6);
        CHECK(rx->queued(has_key) == 0);
        CHECK_FALSE(rx->try_recv(has_key).has_value());
    }
}

TEST_CASE("Subscriptions: an exact source filter, and port 0 meaning any port of that IP") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto rx = must(Pipe::udp(loop, lo(f)), "receiver");
        auto a = must(Pipe::udp(loop, lo(f)), "sender a");
        auto b = must(Pipe::udp(loop, lo(f)), "sender b");
        REQUIRE(a->local_address().port() != b->local_address().port());
        SubId from_a = rx->subscribe(Pattern::any(), a->local_address());
        SubId from_b = rx->subscribe(Pattern::prefix("b"), b->local_address());
        SubId from_host = rx->subscribe(Pattern::any(), lo(f, 0));
        SubId from_other_host = rx->subscribe(Pattern::any(), lo(other(f), 0));
        SubId from_a_ip_wrong_port = rx->subscribe(
            Pattern::any(), a->local_address().with_port(
                                static_cast<std::uint16_t>(a->local_address().port() ^ 1)));

        auto target = rx->stats().msgs_in + 5;
        REQUIRE(!a->send_to("a1", rx->local_address()));
        REQUIRE(!b->send_to("b1", rx->local_address()));
        REQUIRE(!a->send_to("a2", rx->local_address()));
        REQUIRE(!b->send_to("x-not-for-b-sub", rx->local_address()));
        REQUIRE(!b->send_to("b2", rx->local_address()));
        run_until(
            loop, [&] { return rx->stats().msgs_in == target; }, "datagrams");

        std::vector<Received> got_a;
        while (auto m = rx->try_recv(from_a)) got_a.push_back(*m);
        REQUIRE(got_a.size() == 2);
        CHECK(got_a[0].data == "a1");
        CHECK(got_a[1].data == "a2");
        for (auto& m : got_a) CHECK(m.from == a->local_address());
        CHECK(drain(*rx, from_b) == Strings{"b1", "b2"});
        CHECK(rx->queued(from_host) == 5);
        std::vector<Received> got_host;
        while (auto m = rx->try_recv(from_host)) got_host.push_back(*m);
        int seen_a = 0, seen_b = 0;
        for (auto& m : got_host) {
            if (m.from == a->local_address()) ++seen_a;
            if (m.from == b->local_address()) ++seen_b;
        }
        CHECK(seen_a == 2);
        CHECK(seen_b == 3);
        CHECK(rx->queued(from_other_host) == 0);
        CHECK(rx->queued(from_a_ip_wrong_port) == 0);
    }
}

TEST_CASE("Subscriptions: fan-out to every match; a handler gets the message, not a queue") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto rx = must(Pipe::udp(loop, lo(f)), "receiver");
        auto tx = must(Pipe::udp(loop, lo(f)), "sender");
        SubId q1 = rx->subscribe(Pattern::contains("x"));
        SubId q2 = rx->subscribe(Pattern::prefix("x"));
        std::vector<Received> handled1, handled2;
        SubId h1 = rx->subscribe(Pattern::contains("x"), {}, [&](Pipe& p, const Message& m) {
            CHECK(&p == rx.get());
            handled1.push_back({std::string(m.data), m.from, {}});
        });
        SubId h2 = rx->subscribe(Pattern::any(), tx->local_address(), [&](Pipe&, const Message& m) {
            handled2.push_back({std::string(m.data), m.from, {}});
        });

        send_all(loop, *tx, *rx, {"x1", "ax", "none"});
        CHECK(drain(*rx, q1) == Strings{"x1", "ax"});
        CHECK(drain(*rx, q2) == Strings{"x1"});
        REQUIRE(handled1.size() == 2);
        CHECK(handled1[0].data == "x1");
        CHECK(handled1[1].data == "ax");
        CHECK(handled1[0].from == tx->local_address());
        REQUIRE(handled2.size() == 3);
        CHECK(handled2[2].data == "none");
        // Handler subscriptions queue nothing.
        CHECK(rx->queued(h1) == 0);
        CHECK(rx->queued(h2) == 0);
        CHECK_FALSE(rx->try_recv(h1).has_value());

        // A handler may remove its own subscription; the others still get the message.
        SubId self_removing = 0;
        int removed_calls = 0;
        self_removing = rx->subscribe(Pattern::any(), {}, [&](Pipe& p, const Message&) {
            ++removed_calls;
            CHECK(p.unsubscribe(self_removing));
        });
        send_all(loop, *tx, *rx, {"x2", "x3"});
        CHECK(removed_calls == 1);
        CHECK(handled1.size() == 4);
        CHECK(drain(*rx, q1) == Strings{"x2", "x3"});
    }
}

TEST_CASE("Subscriptions: message callbacks run before subscription handlers, in order") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto rx = must(Pipe::udp(loop, lo(f)), "receiver");
        auto tx = must(Pipe::udp(loop, lo(f)), "sender");
        std::vector<std::string> order;
        // Subscriptions made first, callbacks after: the dispatch order is still callbacks first.
        rx->subscribe(Pattern::any(), {}, [&](Pipe&, const Message& m) {
            order.push_back("sub1:" + std::string(m.data));
        });
        rx->subscribe(Pattern::prefix("m"), {}, [&](Pipe&, const Message& m) {
            order.push_back("sub2:" + std::string(m.data));
        });
        rx->on_message(
            [&](Pipe&, const Message& m) { order.push_back("cb1:" + std::string(m.data)); });
        rx->on_message(
            [&](Pipe&, const Message& m) { order.push_back("cb2:" + std::string(m.data)); });
        send_all(loop, *tx, *rx, {"m1", "z2"});
        CHECK(order ==
              Strings{"cb1:m1", "cb2:m1", "sub1:m1", "sub2:m1", "cb1:z2", "cb2:z2", "sub1:z2"});
    }
}

TEST_CASE("Subscriptions: a lone message callback may remove itself and add another") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto rx = must(Pipe::udp(loop, lo(f)), "receiver");
        auto tx = must(Pipe::udp(loop, lo(f)), "sender");
        std::vector<std::string> order;
        CallbackId first = 0;
        first = rx->on_message([&](Pipe& p, const Message& m) {
            order.push_back("first:" + std::string(m.data));
            CHECK(p.remove(first));
            // Added during the call: it starts with the next message.
            p.on_message([&](Pipe&, const Message& m2) {
                order.push_back("second:" + std::string(m2.data));
            });
        });
        send_all(loop, *tx, *rx, {"m1"});
        send_all(loop, *tx, *rx, {"m2"});
        CHECK(order == Strings{"first:m1", "second:m2"});
        CHECK_FALSE(rx->remove(first));
        CHECK(rx->queued(all_messages) == 0);
    }
}

TEST_CASE("Subscriptions: recv hands over the next message with its source, or times out") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto rx = must(Pipe::udp(loop, lo(f)), "receiver");
        auto tx = must(Pipe::udp(loop, lo(f)), "sender");
        SubId sub = rx->subscribe(Pattern::prefix("r"));

        // Nothing comes: status timeout, after about the timeout.
        std::optional<RecvResult> res;
        auto start = std::chrono::steady_clock::now();
        std::chrono::steady_clock::duration took{};
        rx->recv(sub, 300ms, [&](Pipe& p, RecvResult& r) {
            CHECK(&p == rx.get());
            took = std::chrono::steady_clock::now() - start;
            res = std::move(r);
        });
        CHECK_FALSE(res.has_value());
        run_until(
            loop, [&] { return res.has_value(); }, "recv timeout");
        CHECK(res->status == RecvResult::Status::timeout);
        CHECK_FALSE(static_cast<bool>(*res));
        CHECK(took >= 280ms);
        CHECK(took < 1500ms);

        // A waiting recv gets the next matching message; non-matching ones don't wake it.
        res.reset();
        start = std::chrono::steady_clock::now();
        rx->recv(sub, 3000ms, [&](Pipe&, RecvResult& r) {
            took = std::chrono::steady_clock::now() - start;
            res = std::move(r);
        });
        send_all(loop, *tx, *rx, {"not this"});
        CHECK_FALSE(res.has_value());
        REQUIRE(!tx->send_to("r-hello", rx->local_address()));
        run_until(
            loop, [&] { return res.has_value(); }, "recv message");
        CHECK(res->status == RecvResult::Status::message);
        CHECK(res->message.data == "r-hello");
        CHECK(res->message.from == tx->local_address());
        CHECK(took < 1500ms);
        CHECK(rx->queued(sub) == 0);  // handed to the waiter, not queued

        // A queued message is handed over on the next iteration, never inside recv().
        send_all(loop, *tx, *rx, {"r-queued"});
        CHECK(rx->queued(sub) == 1);
        res.reset();
        rx->recv(sub, 1000ms, [&](Pipe&, RecvResult& r) { res = std::move(r); });
        CHECK_FALSE(res.has_value());
        run_until(
            loop, [&] { return res.has_value(); }, "queued message");
        REQUIRE(res.has_value());
        CHECK(res->message.data == "r-queued");

        // Several waiters are served in the order they asked.
        std::vector<std::string> served(2);
        rx->recv(sub, kDeadline, [&](Pipe&, RecvResult& r) { served[0] = r.message.data; });
        rx->recv(sub, kDeadline, [&](Pipe&, RecvResult& r) { served[1] = r.message.data; });
        send_all(loop, *tx, *rx, {"r-1", "r-2"});
        CHECK(served == Strings{"r-1", "r-2"});

        // Without a timeout, recv waits conf().recv_timeout.
        NetConf conf;
        conf.recv_timeout = 200ms;
        auto rx2 = must(Pipe::udp(loop, lo(f), {}, conf), "receiver 2");
        res.reset();
        start = std::chrono::steady_clock::now();
        rx2->recv([&](Pipe&, RecvResult& r) {
            took = std::chrono::steady_clock::now() - start;
            res = std::move(r);
        });
        run_until(
            loop, [&] { return res.has_value(); }, "default recv timeout");
        CHECK(res->status == RecvResult::Status::timeout);
        CHECK(took >= 180ms);
        CHECK(took < 1500ms);
    }
}

TEST_CASE("Subscriptions: a waiting recv wakes with status ended when the pipe ends") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        // UDP, closed here.
        auto rx = must(Pipe::udp(loop, lo(f)), "receiver");
        SubId sub = rx->subscribe(Pattern::any());
        std::vector<RecvResult> results;
        rx->recv(sub, kDeadline, [&](Pipe&, RecvResult& r) { results.push_back(r); });
        rx->recv(all_messages, kDeadline, [&](Pipe&, RecvResult& r) { results.push_back(r); });
        int end_calls = 0;
        rx->on_end([&](Pipe&, const EndInfo&) {
            CHECK(results.size() == 2);  // waiters are woken before the end callbacks
            ++end_calls;
        });
        rx->close();
        run_until(
            loop, [&] { return results.size() == 2 && end_calls == 1; }, "waiters woken");
        for (auto& r : results) {
            CHECK(r.status == RecvResult::Status::ended);
            CHECK(r.end.reason == EndReason::local_close);
        }
        // After the end, recv answers on the next iteration.
        std::optional<RecvResult> late;
        rx->recv(sub, 1000ms, [&](Pipe&, RecvResult& r) { late = r; });
        run_until(
            loop, [&] { return late.has_value(); }, "recv after the end");
        REQUIRE(late.has_value());
        CHECK(late->status == RecvResult::Status::ended);

        // TCP, ended by the peer.
        auto pair = tcp_pair(loop, f);
        std::optional<RecvResult> tcp_res;
        pair.client->recv(all_messages, kDeadline, [&](Pipe&, RecvResult& r) { tcp_res = r; });
        pair.client->recv(all_messages, std::nullopt,
                          [&](Pipe&, RecvResult& r) { results.push_back(r); });
        pair.accepted->close();
        run_until(
            loop, [&] { return tcp_res.has_value() && results.size() == 3; }, "tcp waiter");
        // The peer's FIN wakes waiters with "finished": the peer is done sending.
        CHECK(tcp_res->status == RecvResult::Status::finished);
        CHECK(results[2].status == RecvResult::Status::finished);
    }
}

TEST_CASE("Subscriptions: unsubscribe wakes the waiters with status ended") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto rx = must(Pipe::udp(loop, lo(f)), "receiver");
        auto tx = must(Pipe::udp(loop, lo(f)), "sender");
        SubId sub = rx->subscribe(Pattern::any());
        SubId keep = rx->subscribe(Pattern::any());
        std::vector<RecvResult> results;
        rx->recv(sub, kDeadline, [&](Pipe&, RecvResult& r) { results.push_back(r); });
        rx->recv(sub, kDeadline, [&](Pipe&, RecvResult& r) { results.push_back(r); });
        run_for(loop, 20ms);  // the recv() calls are waiting now
        CHECK(rx->unsubscribe(sub));
        REQUIRE(results.size() == 2);
        for (auto& r : results) CHECK(r.status == RecvResult::Status::ended);
        CHECK_FALSE(rx->unsubscribe(sub));
        CHECK(rx->is_up());  // the pipe itself goes on

        // A removed subscription takes nothing more; recv on it answers ended.
        send_all(loop, *tx, *rx, {"after"});
        CHECK(rx->queued(sub) == 0);
        CHECK(rx->queued(keep) == 1);
        std::optional<RecvResult> late;
        rx->recv(sub, 1000ms, [&](Pipe&, RecvResult& r) { late = r; });
        run_until(
            loop, [&] { return late.has_value(); }, "recv on a removed subscription");
        REQUIRE(late.has_value());
        CHECK(late->status == RecvResult::Status::ended);
        // The timers of the woken waiters never fire later.
        run_for(loop, 100ms);
        CHECK(results.size() == 2);
    }
}

TEST_CASE("Subscriptions: bounded queues drop the oldest (max_qsize, max_queue_bytes)") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        NetConf conf;
        conf.max_qsize = 2;
        auto rx = must(Pipe::udp(loop, lo(f), {}, conf), "receiver");
        auto tx = must(Pipe::udp(loop, lo(f)), "sender");
        SubId sub = rx->subscribe(Pattern::prefix("m"));
        send_all(loop, *tx, *rx, {"m0", "m1", "m2", "m3", "m4"});
        CHECK(rx->queued(sub) == 2);
        CHECK(rx->queued(all_messages) == 2);
        std::vector<std::string> got;
        for (int i = 0; i < 2; ++i)
            rx->recv(sub, 100ms, [&](Pipe&, RecvResult& r) {
                CHECK(r.status == RecvResult::Status::message);
                got.push_back(r.message.data);
            });
        run_until(
            loop, [&] { return got.size() == 2; }, "two recv");
        CHECK(got == Strings{"m3", "m4"});
        CHECK(drain(*rx, all_messages) == Strings{"m3", "m4"});
        CHECK(rx->stats().dropped == 6);  // three from each queue

        NetConf bytes_conf;
        // Each entry counts its bytes plus queue_entry_overhead: room for two 4-byte messages.
        bytes_conf.max_queue_bytes = 2 * queue_entry_overhead + 10;
        auto rx2 = must(Pipe::udp(loop, lo(f), {}, bytes_conf), "receiver 2");
        SubId sub2 = rx2->subscribe(Pattern::any());
        send_all(loop, *tx, *rx2, {"aaaa", "bbbb", "cccc", "dddd"});
        CHECK(drain(*rx2, sub2) == Strings{"cccc", "dddd"});  // a third would pass the bound
        CHECK(drain(*rx2, all_messages) == Strings{"cccc", "dddd"});
        send_all(loop, *tx, *rx2, {"1234567890", "x"});
        CHECK(drain(*rx2, sub2) == Strings{"x"});
        CHECK(rx2->stats().dropped == 6);
    }
}

TEST_CASE("Subscriptions: a pipe with no message callback queues everything on all_messages") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto pair = tcp_pair(loop, f);
        std::optional<RecvResult> res;
        pair.client->recv([&](Pipe&, RecvResult& r) { res = r; });
        REQUIRE(!pair.accepted->send("hello"));
        run_until(
            loop, [&] { return res.has_value(); }, "recv on the implicit subscription");
        CHECK(res->status == RecvResult::Status::message);
        CHECK(res->message.data == "hello");
        CHECK(res->message.from == pair.server->local_address());

        REQUIRE(!pair.accepted->send("queued"));
        run_until(
            loop, [&] { return pair.client->queued(all_messages) == 1; }, "queued");
        CHECK(pair.client->try_recv()->data == "queued");

        // With a message callback, messages go to it and no longer queue.
        std::string via_cb;
        auto id = pair.client->on_message([&](Pipe&, const Message& m) { via_cb += m.data; });
        REQUIRE(!pair.accepted->send("world"));
        run_until(
            loop, [&] { return via_cb == "world"; }, "callback");
        CHECK(pair.client->queued(all_messages) == 0);
        CHECK_FALSE(pair.client->try_recv().has_value());
        // Explicit subscriptions still queue alongside the callback.
        SubId sub = pair.client->subscribe(Pattern::any());
        REQUIRE(!pair.accepted->send("both"));
        run_until(
            loop, [&] { return via_cb == "worldboth"; }, "callback 2");
        CHECK(pair.client->queued(sub) == 1);
        CHECK(pair.client->queued(all_messages) == 0);

        // Without the callback again, the implicit subscription takes messages again.
        CHECK(pair.client->remove(id));
        REQUIRE(!pair.accepted->send("again"));
        run_until(
            loop, [&] { return pair.client->queued(all_messages) == 1; }, "queued again");
        CHECK(pair.client->try_recv()->data == "again");

        // Unsubscribing all_messages turns the implicit subscription off.
        CHECK(pair.client->unsubscribe(all_messages));
        REQUIRE(!pair.accepted->send("dropped"));
        run_until(
            loop, [&] { return pair.client->queued(sub) == 3; }, "explicit sub");
        CHECK(pair.client->queued(all_messages) == 0);
        CHECK_FALSE(pair.client->try_recv().has_value());

        // A UDP pipe has the implicit subscription as well.
        auto rx = must(Pipe::udp(loop, lo(f)), "receiver");
        auto tx = must(Pipe::udp(loop, lo(f), rx->local_address()), "sender");
        REQUIRE(!tx->send("dgram"));
        std::optional<RecvResult> ures;
        rx->recv(all_messages, 2000ms, [&](Pipe&, RecvResult& r) { ures = r; });
        run_until(
            loop, [&] { return ures.has_value(); }, "udp implicit");
        CHECK(ures->message.data == "dgram");
        CHECK(ures->message.from == tx->local_address());
    }
}
