// The publish/subscribe example (examples/pubsub): its broker in-process, with framed clients
// over real loopback sockets: fan-out, topics, joins and departures, bad commands, limits and
// slow subscribers.
#include "../examples/pubsub/broker.hpp"
#include "support.hpp"

#include <memory>
#include <optional>
#include <string>
#include <vector>

using namespace pipeworks;
using namespace pw_test;

namespace {

// A broker client as a test sees it: the broker's answer, then every message after it.
struct Client {
    PipePtr pipe;
    std::optional<std::string> answer;
    std::vector<std::string> got;
    std::optional<EndInfo> end;

    bool ok() const { return answer == "OK"; }
    bool ended() const { return end.has_value(); }
};

NetConf framed() {
    NetConf c;
    c.framer = Framer::message();
    return c;
}

// Connects and sends `command` at once (a publisher may publish before the answer arrives).
std::shared_ptr<Client> connect(Loop& loop, const Address& broker, const std::string& command,
                                const NetConf& conf = framed()) {
    auto c = std::make_shared<Client>();
    c->pipe = must(Pipe::connect(loop, broker, conf), "client connect");
    Client* raw = c.get();
    c->pipe->on_message([raw](Pipe&, const Message& m) {
        if (!raw->answer)
            raw->answer = std::string(m.data);
        else
            raw->got.emplace_back(m.data);
    });
    c->pipe->on_end([raw](Pipe&, const EndInfo& e) { raw->end = e; });
    REQUIRE(!c->pipe->send(command));
    return c;
}

std::shared_ptr<pubsub::Broker> start(Loop& loop, pubsub::BrokerConfig config = {}) {
    return must(pubsub::Broker::start(loop, std::move(config)), "broker start");
}

pubsub::BrokerConfig on(Family f) {
    pubsub::BrokerConfig c;
    c.bind = lo(f);
    return c;
}

std::vector<std::string> numbered(const std::string& prefix, int n) {
    std::vector<std::string> out;
    for (int i = 0; i < n; ++i) out.push_back(prefix + std::to_string(i));
    return out;
}

void publish(Client& pub, const std::vector<std::string>& messages) {
    for (const auto& m : messages) REQUIRE(!pub.pipe->send(m));
}

}  // namespace

TEST_CASE("pubsub: every subscriber gets every message, in order, over IPv4 and IPv6") {
    for (Family f : {Family::ipv4, Family::ipv6}) {
        CAPTURE(static_cast<int>(f));
        Loop loop;
        auto broker = start(loop, on(f));
        CHECK(broker->local_address().family() == f);
        std::vector<std::shared_ptr<Client>> subs;
        for (int i = 0; i < 3; ++i)
            subs.push_back(connect(loop, broker->local_address(), "SUB news"));
        run_until(
            loop,
            [&] {
                for (auto& s : subs)
                    if (!s->ok()) return false;
                return broker->subscribers("news") == 3;
            },
            "three subscribers");
        // The publisher does not wait for its answer: what follows the command is published.
        auto pub = connect(loop, broker->local_address(), "PUB news");
        const auto sent = numbered("message ", 2000);
        publish(*pub, sent);
        run_until(
            loop,
            [&] {
                for (auto& s : subs)
                    if (s->got.size() < sent.size()) return false;
                return true;
            },
            "fan-out");
        for (auto& s : subs) CHECK(s->got == sent);
        CHECK(pub->ok());
        CHECK(pub->got.empty());
        CHECK(broker->publishers("news") == 1);
        CHECK(broker->topics() == 1);
        CHECK(broker->clients() == 4);
    }
}

TEST_CASE("pubsub: topics are isolated") {
    Loop loop;
    auto broker = start(loop);
    auto sub_a = connect(loop, broker->local_address(), "SUB a");
    auto sub_b = connect(loop, broker->local_address(), "SUB b");
    auto sub_ab = connect(loop, broker->local_address(), "SUB ab");  // not a prefix match
    run_until(
        loop, [&] { return sub_a->ok() && sub_b->ok() && sub_ab->ok(); }, "subscribed");
    auto pub_a = connect(loop, broker->local_address(), "PUB a");
    auto pub_b = connect(loop, broker->local_address(), "PUB b");
    publish(*pub_a, {"to a 1", "to a 2"});
    publish(*pub_b, {"to b"});
    run_until(
        loop, [&] { return sub_a->got.size() == 2 && sub_b->got.size() == 1; }, "deliveries");
    run_for(loop, 50ms);
    CHECK(sub_a->got == std::vector<std::string>{"to a 1", "to a 2"});
    CHECK(sub_b->got == std::vector<std::string>{"to b"});
    CHECK(sub_ab->got.empty());
    CHECK(broker->topics() == 3);
}

TEST_CASE("pubsub: a subscriber joining after a publisher gets what is published from then on") {
    Loop loop;
    auto broker = start(loop);
    auto pub = connect(loop, broker->local_address(), "PUB t");
    publish(*pub, {"nobody hears this"});
    run_until(
        loop, [&] { return pub->ok(); }, "publisher in");
    run_for(loop, 20ms);
    auto sub1 = connect(loop, broker->local_address(), "SUB t");
    run_until(
        loop, [&] { return sub1->ok() && broker->subscribers("t") == 1; }, "first subscriber");
    publish(*pub, {"one"});
    run_until(
        loop, [&] { return sub1->got.size() == 1; }, "first message");
    auto sub2 = connect(loop, broker->local_address(), "SUB t");
    run_until(
        loop, [&] { return sub2->ok() && broker->subscribers("t") == 2; }, "second subscriber");
    publish(*pub, {"two"});
    run_until(
        loop, [&] { return sub1->got.size() == 2 && sub2->got.size() == 1; }, "second message");
    CHECK(sub1->got == std::vector<std::string>{"one", "two"});
    CHECK(sub2->got == std::vector<std::string>{"two"});
}

TEST_CASE("pubsub: a subscriber leaving while messages flow leaves the others whole") {
    for (bool reset : {false, true}) {
        CAPTURE(reset);
        Loop loop;
        auto broker = start(loop);
        NetConf leaver_conf = framed();
        if (reset) leaver_conf.linger = std::chrono::seconds(0);
        auto stays = connect(loop, broker->local_address(), "SUB s");
        auto leaves = connect(loop, broker->local_address(), "SUB s", leaver_conf);
        run_until(
            loop, [&] { return broker->subscribers("s") == 2 && stays->ok() && leaves->ok(); },
            "subscribed");
        auto pub = connect(loop, broker->local_address(), "PUB s");
        const auto sent = numbered("m", 5000);
        std::size_t next = 0;
        // Publish in steps, so the subscriber leaves in the middle of the stream.
        auto pump = [&] {
            for (int i = 0; i < 50 && next < sent.size(); ++i)
                REQUIRE(!pub->pipe->send(sent[next++]));
        };
        run_until(
            loop,
            [&] {
                pump();
                if (leaves->got.size() >= 100 && !leaves->pipe->ending()) leaves->pipe->close();
                return stays->got.size() == sent.size();
            },
            "the remaining subscriber gets everything");
        CHECK(stays->got == sent);
        run_until(
            loop, [&] { return broker->subscribers("s") == 1; }, "the broker forgets the leaver");
        CHECK(broker->clients() == 2);
        CHECK(pub->pipe->is_up());
        CHECK_FALSE(pub->ended());
        CHECK(leaves->got.size() < sent.size());
    }
}

TEST_CASE("pubsub: a publisher leaving ends nothing else, and its messages all arrive") {
    Loop loop;
    auto broker = start(loop);
    auto sub = connect(loop, broker->local_address(), "SUB p");
    run_until(
        loop, [&] { return sub->ok(); }, "subscribed");
    auto pub = connect(loop, broker->local_address(), "PUB p");
    const auto sent = numbered("last words ", 500);
    publish(*pub, sent);
    pub->pipe->close();  // what was queued still goes out, then a FIN
    run_until(
        loop, [&] { return sub->got.size() == sent.size() && broker->publishers("p") == 0; },
        "everything, then the publisher gone");
    CHECK(sub->got == sent);
    CHECK(broker->clients() == 1);
    run_for(loop, 20ms);
    CHECK_FALSE(sub->ended());

    // A publisher that resets its connection takes nothing else down either.
    NetConf rst = framed();
    rst.linger = std::chrono::seconds(0);
    auto abrupt = connect(loop, broker->local_address(), "PUB p", rst);
    run_until(
        loop, [&] { return abrupt->ok(); }, "second publisher in");
    abrupt->pipe->close();
    run_until(
        loop, [&] { return broker->publishers("p") == 0 && broker->clients() == 1; },
        "reset publisher gone");
    // The topic lives on: a new publisher reaches the same subscriber.
    auto next = connect(loop, broker->local_address(), "PUB p");
    publish(*next, {"still here"});
    run_until(
        loop, [&] { return sub->got.size() == sent.size() + 1; }, "a new publisher");
    CHECK(sub->got.back() == "still here");
    CHECK_FALSE(sub->ended());
}

TEST_CASE("pubsub: a bad command closes that client only, over IPv4 and IPv6") {
    for (Family f : {Family::ipv4, Family::ipv6}) {
        CAPTURE(static_cast<int>(f));
        Loop loop;
        pubsub::BrokerConfig config = on(f);
        config.max_topic_length = 8;
        auto broker = start(loop, config);
        auto sub = connect(loop, broker->local_address(), "SUB ok");
        auto pub = connect(loop, broker->local_address(), "PUB ok");
        run_until(
            loop, [&] { return sub->ok() && pub->ok(); }, "good clients in");
        std::vector<std::shared_ptr<Client>> bad;
        for (const char* cmd : {"HELLO", "SUB", "SUB ", "PUB two words", "SUB toolongtopic",
                                "sub ok", "SUB tab\there"})
            bad.push_back(connect(loop, broker->local_address(), cmd));
        run_until(
            loop,
            [&] {
                for (auto& b : bad)
                    if (!b->ended()) return false;
                return true;
            },
            "bad clients closed");
        for (auto& b : bad) {
            REQUIRE(b->answer);
            CHECK(b->answer->starts_with("ERR "));
            CHECK(b->end->reason == EndReason::peer_close);
        }
        run_until(
            loop, [&] { return broker->clients() == 2; }, "the broker forgets them");
        CHECK(broker->counters().refused == bad.size());
        publish(*pub, {"after the bad ones"});
        run_until(
            loop, [&] { return sub->got.size() == 1; }, "the good clients go on");
        CHECK_FALSE(sub->ended());
        CHECK_FALSE(pub->ended());
        CHECK(broker->topics() == 1);
    }
}

TEST_CASE("pubsub: limits on clients and topics; a silent client is timed out") {
    Loop loop;
    pubsub::BrokerConfig config;
    config.max_clients = 3;
    config.max_topics = 2;
    config.command_timeout = 200ms;
    auto broker = start(loop, config);
    auto a = connect(loop, broker->local_address(), "SUB one");
    auto b = connect(loop, broker->local_address(), "SUB two");
    run_until(
        loop, [&] { return a->ok() && b->ok(); }, "two topics");
    auto third_topic = connect(loop, broker->local_address(), "SUB three");
    run_until(
        loop, [&] { return third_topic->ended(); }, "third topic refused");
    CHECK(third_topic->answer == "ERR too many topics");
    auto same_topic = connect(loop, broker->local_address(), "PUB one");  // an existing topic
    run_until(
        loop, [&] { return same_topic->ok(); }, "an existing topic is fine");
    auto fourth = connect(loop, broker->local_address(), "SUB one");
    run_until(
        loop, [&] { return fourth->ended(); }, "fourth client refused");
    CHECK(fourth->answer == "ERR too many clients");
    CHECK(broker->clients() == 3);

    // Room again once a client leaves; a client that says nothing is closed in time.
    b->pipe->close();
    run_until(
        loop, [&] { return broker->clients() == 2 && broker->topics() == 1; }, "b gone");
    auto silent = must(Pipe::connect(loop, broker->local_address(), framed()), "silent");
    std::optional<std::string> said;
    bool silent_ended = false;
    silent->on_message([&](Pipe&, const Message& m) { said = std::string(m.data); });
    silent->on_end([&](Pipe&, const EndInfo&) { silent_ended = true; });
    run_until(
        loop, [&] { return silent_ended; }, "silent client timed out");
    CHECK(said == "ERR no command in time");
    CHECK(broker->clients() == 2);
}

TEST_CASE("pubsub: a slow subscriber slows its topic down; --drop-slow closes it instead") {
    for (bool drop_slow : {false, true}) {
        CAPTURE(drop_slow);
        Loop loop;
        pubsub::BrokerConfig config;
        config.high_watermark = 256 * 1024;
        config.low_watermark = 64 * 1024;
        config.drop_slow = drop_slow;
        config.slow_grace = 200ms;
        auto broker = start(loop, config);
        auto fast = connect(loop, broker->local_address(), "SUB load");
        auto slow = connect(loop, broker->local_address(), "SUB load");
        run_until(
            loop, [&] { return fast->ok() && slow->ok(); }, "subscribed");
        slow->pipe->pause();  // reads nothing: the kernel's buffers, then the broker's, fill
        auto pub = connect(loop, broker->local_address(), "PUB load");
        run_until(
            loop, [&] { return pub->ok(); }, "publisher in");
        const std::string payload(4096, 'x');
        const std::size_t total = 12000;  // ~48 MiB: more than loopback's buffers hold
        std::size_t sent = 0;
        auto pump = [&] {
            while (sent < total && pub->pipe->write_queue_bytes() < 1024 * 1024) {
                REQUIRE(!pub->pipe->send(std::to_string(sent) + ":" + payload));
                ++sent;
            }
        };
        if (drop_slow) {
            run_until(
                loop,
                [&] {
                    pump();
                    return fast->got.size() == total;
                },
                "the fast subscriber gets everything", 30s);
            CHECK(broker->counters().dropped_slow == 1);
            run_until(
                loop, [&] { return broker->subscribers("load") == 1; }, "slow one dropped");
            slow->pipe->resume();
            run_until(
                loop, [&] { return slow->ended(); }, "the slow subscriber sees the end");
            CHECK(slow->got.size() < total);
        } else {
            // The fast subscriber stalls with the slow one: nothing arrives for 200 ms while
            // the publisher still has more to send. (A flat loop: Loop::run_until must not be
            // nested in another's predicate.)
            std::size_t stalled_at = 0;
            bool stalled = false;
            for (auto end = std::chrono::steady_clock::now() + 20s;
                 !stalled && std::chrono::steady_clock::now() < end;) {
                const std::size_t before = fast->got.size();
                for (int i = 0; i < 20; ++i) {
                    pump();
                    run_for(loop, 10ms);
                }
                stalled_at = fast->got.size();
                stalled = stalled_at == before && sent < total;
            }
            REQUIRE(stalled);
            CHECK(stalled_at < total);
            CHECK(slow->got.size() < total);
            // ...and once the slow one reads again, both get everything, in order.
            slow->pipe->resume();
            run_until(
                loop,
                [&] {
                    pump();
                    return fast->got.size() == total && slow->got.size() == total;
                },
                "everything, for both", 30s);
            for (std::size_t i = 0; i < total; i += 997) {
                CHECK(fast->got[i] == std::to_string(i) + ":" + payload);
                CHECK(slow->got[i] == std::to_string(i) + ":" + payload);
            }
            CHECK(broker->counters().dropped_slow == 0);
        }
    }
}
