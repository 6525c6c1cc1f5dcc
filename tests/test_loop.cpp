#include "support.hpp"

#include "platform/loop_core.hpp"

#include <pipeworks/pipe.hpp>

#include <uv.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <thread>
#include <vector>

using namespace pipeworks;
using namespace pw_test;

namespace {

using Clock = std::chrono::steady_clock;

// Counts loop iterations: a check handle of its own runs once per iteration. Its handle is
// freed by its close callback, which the Loop's destructor runs.
class IterationCounter {
public:
    explicit IterationCounter(Loop& loop) : s_(new State) {
        uv_check_init(loop.native(), &s_->check);
        s_->check.data = s_;
        uv_check_start(&s_->check, [](uv_check_t* h) { ++static_cast<State*>(h->data)->n; });
        uv_unref(reinterpret_cast<uv_handle_t*>(&s_->check));
    }
    ~IterationCounter() {
        uv_close(reinterpret_cast<uv_handle_t*>(&s_->check),
                 [](uv_handle_t* h) { delete static_cast<State*>(h->data); });
    }
    IterationCounter(const IterationCounter&) = delete;
    IterationCounter& operator=(const IterationCounter&) = delete;
    std::uint64_t count() const { return s_->n; }
    // For a test that runs the loop itself: libuv's UV_RUN_ONCE runs timers at the start of a
    // call and again at its end, with no check phase between one call's end and the next
    // call's start, so such a test moves the count on after each call too.
    void next_call() { ++s_->n; }

private:
    struct State {
        uv_check_t check{};
        std::uint64_t n = 0;
    };
    State* s_;
};

}  // namespace

TEST_CASE("call_later fires once, in order of delay") {
    Loop loop;
    std::vector<int> order;
    loop.call_later(300ms, [&] { order.push_back(2); });  // far enough for a slow first iteration
    loop.call_later(0ms, [&] { order.push_back(1); });
    run_until(
        loop, [&] { return order.size() == 2; }, "timers");
    CHECK(order == std::vector<int>{1, 2});
}

TEST_CASE("a cancelled timer never fires") {
    Loop loop;
    bool fired = false;
    Timer t = loop.call_later(10ms, [&] { fired = true; });
    CHECK(t.active());
    t.cancel();
    CHECK_FALSE(t.active());
    run_for(loop, 50ms);
    CHECK_FALSE(fired);
}

TEST_CASE("post is thread-safe and runs on the loop thread in order") {
    Loop loop;
    std::vector<int> got;
    std::thread::id loop_thread = std::this_thread::get_id();
    bool wrong_thread = false;
    std::thread producer([&] {
        for (int i = 0; i < 1000; ++i)
            loop.post([&, i] {
                if (std::this_thread::get_id() != loop_thread) wrong_thread = true;
                got.push_back(i);
            });
    });
    run_until(
        loop, [&] { return got.size() == 1000; }, "posted functions");
    producer.join();
    CHECK_FALSE(wrong_thread);
    for (int i = 0; i < 1000; ++i) REQUIRE(got[static_cast<std::size_t>(i)] == i);
}

TEST_CASE("run returns when nothing is left, stop ends run") {
    Loop loop;
    CHECK(loop.run());
    loop.call_later(0ms, [&] { loop.stop(); });
    loop.call_later(60000ms, [] {});
    auto t0 = std::chrono::steady_clock::now();
    CHECK_FALSE(loop.run());
    CHECK(std::chrono::steady_clock::now() - t0 < 5s);
}

TEST_CASE("destroying a loop with open timers and pipes releases them silently") {
    bool fired = false;
    {
        Loop loop;
        loop.call_later(60000ms, [&] { fired = true; });
        auto server = must(Pipe::listen(loop, lo(Family::ipv4)), "listen");
        server->on_end([&](Pipe&, const EndInfo&) { fired = true; });
        auto client = must(Pipe::connect(loop, server->local_address()), "connect");
        run_until(
            loop, [&] { return client->is_up() && server->clients().size() == 1; }, "connection");
    }
    CHECK_FALSE(fired);
}

TEST_CASE("borrowed uv loop") {
    uv_loop_s* raw = nullptr;
    {
        Loop owner;
        raw = owner.native();
        Loop borrowed(raw);
        bool fired = false;
        borrowed.call_later(1ms, [&] { fired = true; });
        run_until(
            borrowed, [&] { return fired; }, "timer on borrowed loop");
    }
}

// ---------------------------------------------------------------- timers count from now

TEST_CASE("a timer counts from when it is set, not from the start of the loop iteration") {
    Loop loop;
    std::this_thread::sleep_for(1200ms);  // blocking work: the loop's cached clock lags
    const auto set = Clock::now();
    std::optional<Clock::duration> after;
    loop.call_later(1000ms, [&] { after = Clock::now() - set; });
    run_until(
        loop, [&] { return after.has_value(); }, "1 s timer");
    REQUIRE(after);
    // libuv's clock has millisecond steps.
    CHECK(*after >= 990ms);
}

TEST_CASE("run_until's timeout counts from the call") {
    Loop loop;
    std::this_thread::sleep_for(300ms);
    const auto t0 = Clock::now();
    CHECK_FALSE(loop.run_until([] { return false; }, 200ms));
    CHECK(Clock::now() - t0 >= 190ms);
}

// ---------------------------------------------------------------- call_later(0) and defer

TEST_CASE("a self-re-arming call_later(0) advances one step per iteration; a timer still fires") {
    Loop loop;
    IterationCounter iterations(loop);
    constexpr int kMaxSteps = 100000;  // bounds the chain if it ran within one iteration
    int steps = 0;
    int steps_when_fired = -1;
    bool skipped_or_doubled = false;
    std::uint64_t last = 0;
    std::function<void()> step = [&] {
        const std::uint64_t now = iterations.count();
        if (steps > 0 && now != last + 1) skipped_or_doubled = true;
        last = now;
        ++steps;
        if (steps_when_fired < 0 && steps < kMaxSteps) loop.call_later(0ms, step);
    };
    loop.call_later(0ms, step);
    loop.call_later(5ms, [&] { steps_when_fired = steps; });
    run_until(
        loop, [&] { return steps_when_fired >= 0; }, "5 ms timer");
    CHECK(steps_when_fired > 0);
    CHECK(steps_when_fired < kMaxSteps);
    CHECK_FALSE(skipped_or_doubled);
}

TEST_CASE("a self-re-arming call_later(0) does not starve a UDP read") {
    Loop loop;
    auto rx = must(Pipe::udp(loop, lo(Family::ipv4)), "receiver");
    auto tx = must(Pipe::udp(loop, lo(Family::ipv4)), "sender");
    bool got = false;
    rx->on_message([&](Pipe&, const Message&) { got = true; });
    constexpr int kMaxSteps = 100000;
    int steps = 0;
    std::function<void()> step = [&] {
        if (!got && ++steps < kMaxSteps) loop.call_later(0ms, step);
    };
    loop.call_later(0ms, step);
    REQUIRE(!tx->send_to("ping", rx->local_address()));
    run_until(
        loop, [&] { return got; }, "datagram");
    CHECK(steps < kMaxSteps);
}

TEST_CASE("deferred functions run in order in a later iteration; ones deferred meanwhile wait") {
    Loop loop;
    IterationCounter iterations(loop);
    auto& core = loop.core();
    struct Ran {
        int id;
        std::uint64_t iteration;
    };
    std::vector<Ran> ran;
    auto note = [&](int id) { ran.push_back({id, iterations.count()}); };
    core.defer([&] {
        note(1);
        core.defer([&] { note(4); });
        CHECK(ran.size() == 1);  // not inside the call
    });
    core.defer([&] { note(2); });
    core.defer([&] { note(3); });
    CHECK(ran.empty());
    run_until(
        loop, [&] { return ran.size() == 4; }, "deferred functions");
    REQUIRE(ran.size() == 4);
    for (int i = 0; i < 4; ++i) CHECK(ran[static_cast<std::size_t>(i)].id == i + 1);
    CHECK(ran[1].iteration == ran[0].iteration);
    CHECK(ran[2].iteration == ran[0].iteration);
    CHECK(ran[3].iteration == ran[0].iteration + 1);

    // Deferred from a timer: not in the iteration whose timer phase deferred it.
    std::optional<std::uint64_t> timer_iteration, deferred_iteration;
    loop.call_later(1ms, [&] {
        timer_iteration = iterations.count();
        core.defer([&] { deferred_iteration = iterations.count(); });
        loop.call_later(0ms, [&] { CHECK(deferred_iteration.has_value()); });
    });
    run_until(
        loop, [&] { return deferred_iteration.has_value(); }, "deferred from a timer");
    REQUIRE(timer_iteration);
    REQUIRE(deferred_iteration);
    CHECK(*deferred_iteration == *timer_iteration + 1);
    run_for(loop, 5ms);
}

TEST_CASE("call_later(0) returns a cancellable timer") {
    Loop loop;
    bool a = false, b = false, c = false;
    Timer ta = loop.call_later(0ms, [&] { a = true; });
    Timer tc;
    Timer tb = loop.call_later(0ms, [&] {
        b = true;
        tc.cancel();  // runs in the same batch as tc
    });
    tc = loop.call_later(0ms, [&] { c = true; });
    CHECK(ta.active());
    ta.cancel();
    CHECK_FALSE(ta.active());
    CHECK(tb.active());
    run_until(
        loop, [&] { return b; }, "zero-delay timer");
    run_for(loop, 10ms);
    CHECK_FALSE(a);
    CHECK(b);
    CHECK_FALSE(c);
    CHECK_FALSE(tb.active());
    CHECK_FALSE(tc.active());
    tb.cancel();  // after it ran: harmless
}

TEST_CASE("deferred work keeps run() going; ~Loop discards it unrun") {
    {
        Loop loop;
        int n = 0;
        Timer guard = loop.call_later(kDeadline, [&] { loop.stop(); });
        std::function<void()> step = [&] {
            if (++n < 100)
                loop.core().defer(step);
            else
                guard.cancel();
        };
        loop.core().defer(step);
        CHECK(loop.run());
        CHECK(n == 100);
    }
    auto token = std::make_shared<int>(0);
    bool ran = false;
    {
        Loop loop;
        loop.core().defer([&ran, token] { ran = true; });
        loop.call_later(0ms, [&ran, token] { ran = true; });
    }
    {
        // Deferred inside an iteration, then the loop stops before their turn.
        Loop loop;
        loop.call_later(1ms, [&] {
            loop.core().defer([&ran, token] { ran = true; });
            loop.call_later(0ms, [&ran, token] { ran = true; });
            loop.stop();
        });
        CHECK_FALSE(loop.run());
    }
    CHECK_FALSE(ran);
    CHECK(token.use_count() == 1);
}

// ---------------------------------------------------------------- the loop's thread

TEST_CASE("a pipe cannot be opened from another thread while run_once or run_nowait runs") {
    auto attempt = [](bool once) {
        CAPTURE(once);
        Loop loop;
        std::atomic<bool> in_callback{false}, tried{false};
        // The callback holds the loop thread inside run_once / run_nowait until the other
        // thread has tried.
        auto hold = [&] {
            in_callback = true;
            for (auto end = Clock::now() + kDeadline; !tried && Clock::now() < end;)
                std::this_thread::yield();
        };
        loop.call_later(once ? 1ms : 0ms, hold);
        std::thread runner([&] {
            if (once)
                for (auto end = Clock::now() + kDeadline; !in_callback && Clock::now() < end;)
                    loop.run_once();
            else
                loop.run_nowait();
        });
        std::optional<Error> refused;
        bool opened = false;
        std::thread other([&] {
            for (auto end = Clock::now() + kDeadline; !in_callback && Clock::now() < end;)
                std::this_thread::yield();
            auto r = Pipe::udp(loop, lo(Family::ipv4));
            if (r)
                opened = true;
            else
                refused = r.error();
            tried = true;
        });
        other.join();
        runner.join();
        CHECK(in_callback);
        CHECK_FALSE(opened);
        REQUIRE(refused);
        CHECK(refused->code == errc::invalid_config);
    };
    attempt(true);
    attempt(false);
}

// ---------------------------------------------------------------- deadlines

namespace {

struct Probe : detail::Deadline {
    detail::LoopCore* core = nullptr;
    std::vector<Probe*>* order = nullptr;
    std::uint64_t fired_at = 0;
    int fires = 0;
    int rearms = 0;  // how many more times expired re-arms it
    std::uint64_t rearm_after = 0;
    std::vector<std::uint64_t> iterations;
    const IterationCounter* counter = nullptr;

    explicit Probe(detail::LoopCore& c) : core(&c) { expired = on_expired; }
    static void on_expired(detail::Deadline& d) {
        auto& p = static_cast<Probe&>(d);
        CHECK_FALSE(p.armed());
        p.fired_at = p.core->fresh_now_ms();
        ++p.fires;
        if (p.order) p.order->push_back(&p);
        if (p.counter) p.iterations.push_back(p.counter->count());
        if (p.rearms > 0) {
            --p.rearms;
            p.core->arm(p, p.core->fresh_now_ms() + p.rearm_after);
        }
    }
};

}  // namespace

TEST_CASE("deadlines: 1,000 fire in order, soon after their time; moved ones move") {
    Loop loop;
    auto& core = loop.core();
    std::mt19937 rng(20240611);
    std::uniform_int_distribution<int> offset(0, 400);
    std::vector<Probe*> order;
    std::vector<std::unique_ptr<Probe>> probes;
    const std::uint64_t base = core.fresh_now_ms();
    for (int i = 0; i < 1000; ++i) {
        probes.push_back(std::make_unique<Probe>(core));
        probes.back()->order = &order;
        core.arm(*probes.back(), base + static_cast<std::uint64_t>(offset(rng)));
    }
    // Move a third of them (earlier or later), and disarm a tenth.
    std::uniform_int_distribution<std::size_t> pick(0, probes.size() - 1);
    for (int i = 0; i < 333; ++i)
        core.arm(*probes[pick(rng)], base + static_cast<std::uint64_t>(offset(rng)));
    std::size_t disarmed = 0;
    for (std::size_t i = 0; i < probes.size(); i += 10) {
        core.disarm(*probes[i]);
        CHECK_FALSE(probes[i]->armed());
        ++disarmed;
    }
    const std::size_t expected = probes.size() - disarmed;
    run_until(
        loop, [&] { return order.size() >= expected; }, "1,000 deadlines");
    run_for(loop, 20ms);
    REQUIRE(order.size() == expected);
    std::uint64_t total_late = 0, worst_late = 0;
    for (std::size_t i = 0; i < order.size(); ++i) {
        const Probe& p = *order[i];
        CHECK(p.fires == 1);
        CHECK(p.fired_at >= p.at_ms);
        if (i > 0) CHECK(order[i - 1]->at_ms <= p.at_ms);
        const std::uint64_t late = p.fired_at - p.at_ms;
        total_late += late;
        worst_late = std::max(worst_late, late);
    }
    for (std::size_t i = 0; i < probes.size(); i += 10) CHECK(probes[i]->fires == 0);
    CAPTURE(worst_late);
    // A shared machine may delay a wake-up now and then; on average a deadline is on time.
    CHECK(total_late / order.size() <= 5);
    CHECK(worst_late <= 50);
    for (auto& p : probes) CHECK_FALSE(p->armed());
}

TEST_CASE("deadlines: expired may re-arm its own deadline, even for now") {
    Loop loop;
    auto& core = loop.core();
    IterationCounter iterations(loop);
    Probe later(core);
    later.rearms = 3;
    later.rearm_after = 5;
    Probe now(core);
    now.rearms = 50;
    now.rearm_after = 0;
    now.counter = &iterations;
    core.arm(later, core.fresh_now_ms() + 5);
    core.arm(now, core.fresh_now_ms());
    // The deadline timer keeps no run_once() going: this timer does, until the test ends.
    Timer alive = loop.call_later(kDeadline, [] {});
    const auto give_up = Clock::now() + kDeadline;
    while (!(later.fires == 4 && now.fires == 51) && Clock::now() < give_up) {
        loop.run_once();
        iterations.next_call();
    }
    REQUIRE_MESSAGE(later.fires == 4, "re-armed deadlines");
    REQUIRE_MESSAGE(now.fires == 51, "re-armed deadlines");
    alive.cancel();
    CHECK_FALSE(later.armed());
    CHECK_FALSE(now.armed());
    // Re-armed for "now" from its own call, it still waits for a later iteration.
    for (std::size_t i = 1; i < now.iterations.size(); ++i)
        CHECK(now.iterations[i] > now.iterations[i - 1]);
}

TEST_CASE(
    "run_until ends when a deadline makes pred true, though nothing else would wake the poll") {
    // The deadline is due when the iteration starts (pred's first call takes longer than its
    // delay), so it expires before the poll, and nothing else is pending: the poll would wait
    // for the whole timeout unless pred is looked at before it.
    Loop loop;
    auto& core = loop.core();
    Probe p(core);
    core.arm(p, core.fresh_now_ms() + 10);
    int calls = 0;
    const auto t0 = Clock::now();
    const bool done = loop.run_until(
        [&] {
            if (calls++ == 0) std::this_thread::sleep_for(50ms);
            return p.fires == 1;
        },
        3s);
    CHECK(done);
    CHECK(Clock::now() - t0 < 1s);

    // An exception from pred comes out of run_until, wherever pred was called from.
    core.arm(p, core.fresh_now_ms() + 10);
    int n = 0;
    CHECK_THROWS_WITH(loop.run_until(
                          [&n]() -> bool {
                              if (n++ == 1) throw std::runtime_error("pred failed");
                              return false;
                          },
                          1s),
                      "pred failed");
}

TEST_CASE("deadlines: expired may disarm and destroy other deadlines, due or not") {
    Loop loop;
    auto& core = loop.core();
    // Two deadlines due together: whichever runs first disarms and destroys the other.
    struct Rival : detail::Deadline {
        detail::LoopCore* core = nullptr;
        std::unique_ptr<Rival>* self = nullptr;
        std::unique_ptr<Rival>* other = nullptr;
        Probe* bystander = nullptr;
        int* fires = nullptr;
    };
    std::unique_ptr<Rival> rivals[2];
    int fires = 0;
    Probe bystander(core);  // later: disarmed from the first call
    const std::uint64_t at = core.fresh_now_ms() + 10;
    for (int i = 0; i < 2; ++i) {
        rivals[i] = std::make_unique<Rival>();
        Rival& r = *rivals[i];
        r.core = &core;
        r.self = &rivals[i];
        r.other = &rivals[1 - i];
        r.bystander = &bystander;
        r.fires = &fires;
        r.expired = [](detail::Deadline& d) {
            auto& r = static_cast<Rival&>(d);
            ++*r.fires;
            if (*r.other) {
                CHECK((*r.other)->armed());
                r.core->disarm(**r.other);
                r.other->reset();
            }
            r.core->disarm(*r.bystander);
        };
        core.arm(r, at);
    }
    core.arm(bystander, at + 30);
    run_until(
        loop, [&] { return fires > 0; }, "rival deadlines");
    run_for(loop, 60ms);
    CHECK(fires == 1);
    CHECK(static_cast<bool>(rivals[0]) != static_cast<bool>(rivals[1]));
    for (auto& r : rivals)
        if (r) CHECK_FALSE(r->armed());
    CHECK(bystander.fires == 0);
    CHECK_FALSE(bystander.armed());
}

TEST_CASE("deadlines: disarmed before its time never fires; the timer keeps no run() alive") {
    Loop loop;
    auto& core = loop.core();
    Probe p(core);
    core.arm(p, core.fresh_now_ms() + 20);
    CHECK(p.armed());
    core.disarm(p);
    CHECK_FALSE(p.armed());
    core.disarm(p);  // harmless when not armed
    run_for(loop, 60ms);
    CHECK(p.fires == 0);

    core.arm(p, core.fresh_now_ms() + 60000);
    const auto t0 = Clock::now();
    CHECK(loop.run());
    CHECK(Clock::now() - t0 < 1s);
    CHECK(p.armed());

    Probe q(core);
    {
        Loop other;
        other.core().arm(q, other.core().fresh_now_ms() + 1000);
        CHECK(q.armed());
    }
    CHECK_FALSE(q.armed());
    core.disarm(p);
}

#ifdef __linux__
TEST_CASE(
    "deadlines: the poll sleeps with no timeout while they wait; their descriptor goes "
    "with the loop") {
    // The deadlines' timer is a timerfd: a libuv timer would give every epoll_wait a timeout,
    // which costs the kernel a timer of its own each time the loop sleeps.
    auto fds = [] {
        std::size_t n = 0;
        for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd"))
            ++n;
        return n;
    };
    { Loop warm_up; }  // libuv opens a pipe of its own for signals, once per process
    const std::size_t before = fds();
    {
        Loop loop;
        auto& core = loop.core();
        auto server = must(Pipe::listen(loop, lo(Family::ipv4)), "listen");  // keeps run() going
        loop.run_nowait();  // what listen() deferred
        Probe later(core);
        core.arm(later, core.fresh_now_ms() + 60000);
        CHECK(uv_backend_timeout(loop.native()) == -1);
        Probe soon(core);
        core.arm(soon, core.fresh_now_ms() + 30);
        CHECK(uv_backend_timeout(loop.native()) == -1);
        const auto t0 = Clock::now();
        loop.run_until([&] { return soon.fires > 0; }, 2s);
        CHECK(soon.fires == 1);
        CHECK(Clock::now() - t0 >= 25ms);
        CHECK(later.fires == 0);
        CHECK(later.armed());
        core.disarm(later);
    }
    CHECK(fds() == before);
}
#endif

// ---------------------------------------------------------------- exceptions

TEST_CASE("an exception from a timer comes out of run(); the loop runs on") {
    Loop loop;
    loop.call_later(1ms, [] { throw std::runtime_error("boom"); });
    CHECK_THROWS_WITH(loop.run(), "boom");
    bool fired = false;
    loop.call_later(1ms, [&] { fired = true; });
    CHECK(loop.run());
    CHECK(fired);

    // From run_until too, which puts its timeout timer away: run() then has nothing to wait for.
    loop.call_later(1ms, [] { throw std::runtime_error("boom again"); });
    CHECK_THROWS_WITH(loop.run_until([] { return false; }, kDeadline), "boom again");
    const auto t0 = Clock::now();
    CHECK(loop.run());
    CHECK(Clock::now() - t0 < 1s);

    // Zero delay: the loop stops after the callback that threw; the rest run next time.
    bool second = false;
    loop.call_later(0ms, [] { throw std::runtime_error("first"); });
    loop.call_later(0ms, [&] { second = true; });
    CHECK_THROWS_WITH(loop.run(), "first");
    CHECK_FALSE(second);
    CHECK(loop.run());
    CHECK(second);

    loop.call_later(0ms, [] { throw std::runtime_error("once"); });
    CHECK_THROWS_WITH(loop.run_once(), "once");
    loop.call_later(0ms, [] { throw std::runtime_error("nowait"); });
    CHECK_THROWS_WITH(loop.run_nowait(), "nowait");
    loop.core().defer([] { throw std::runtime_error("deferred"); });
    CHECK_THROWS_WITH(loop.run_until([] { return false; }, kDeadline), "deferred");
    CHECK(loop.run());
}

TEST_CASE("an exception from a posted function comes out of run_until; the rest run later") {
    Loop loop;
    bool second = false;
    loop.post([] { throw std::runtime_error("boom"); });
    loop.post([&] { second = true; });
    CHECK_THROWS_WITH(loop.run_until([&] { return second; }, kDeadline), "boom");
    CHECK_FALSE(second);
    run_until(
        loop, [&] { return second; }, "the posted function after the one that threw");
    bool third = false;
    loop.post([&] { third = true; });
    run_until(
        loop, [&] { return third; }, "posted after the exception");
}

TEST_CASE("an exception from a signal handler or a deadline comes out of run_until") {
    Loop loop;
    SignalWatch w = loop.on_signal(SIGUSR1, [](int) { throw std::runtime_error("signal"); });
    loop.call_later(1ms, [] { std::raise(SIGUSR1); });
    CHECK_THROWS_WITH(loop.run_until([] { return false; }, kDeadline), "signal");
    w.cancel();

    // Two deadlines due together: the first to run throws; the other waits for the next run.
    auto& core = loop.core();
    struct Thrower : detail::Deadline {
        int* fires = nullptr;
    };
    int fires = 0;
    Thrower t[2];
    const std::uint64_t at = core.fresh_now_ms() + 5;
    for (auto& d : t) {
        d.fires = &fires;
        d.expired = [](detail::Deadline& d) {
            if (++*static_cast<Thrower&>(d).fires == 1) throw std::runtime_error("deadline");
        };
        core.arm(d, at);
    }
    CHECK_THROWS_WITH(loop.run_until([&] { return fires == 2; }, kDeadline), "deadline");
    CHECK(fires == 1);
    CHECK(t[0].armed() != t[1].armed());
    run_until(
        loop, [&] { return fires == 2; }, "the other deadline");
    CHECK_FALSE(t[0].armed());
    CHECK_FALSE(t[1].armed());
}

TEST_CASE("report_exception keeps the first and stops the loop") {
    Loop loop;
    bool later = false;
    loop.call_later(1ms, [&] {
        loop.core().report_exception(std::make_exception_ptr(std::runtime_error("first")));
        loop.core().report_exception(std::make_exception_ptr(std::runtime_error("second")));
    });
    loop.call_later(200ms, [&] { later = true; });
    CHECK_THROWS_WITH(loop.run(), "first");
    CHECK_FALSE(later);
    CHECK(loop.run());
    CHECK(later);
}
