// SyncEngine: the blocking facade's private Loop, its thread, and the hand-over of calls to it.
#pragma once

#include <pipeworks/error.hpp>
#include <pipeworks/loop.hpp>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace pipeworks::detail {

// An empty Error when the calling thread may block; errc::blocking_on_loop_thread naming
// `what` when it runs a Loop.
Error refuse_on_loop_thread(const char* what);
// errc::sync_timeout: `what` did not complete within `timeout`.
Error sync_timeout_error(const char* what, std::chrono::milliseconds timeout);

// One result handed from the loop thread to the caller waiting for it. The first set() wins.
// A caller that gave up has left: a later set() is refused, and the value stays with its setter.
template <class T>
class Handoff {
public:
    // Takes `value` (moved from) unless a value came first or the caller has left.
    bool set(T& value) {
        {
            std::lock_guard lock(mu_);
            if (value_ || left_) return false;
            value_.emplace(std::move(value));
        }
        cv_.notify_all();
        return true;
    }
    // The value, or nullopt (and the caller has left) when `deadline` passes first.
    std::optional<T> wait_until(std::chrono::steady_clock::time_point deadline) {
        std::unique_lock lock(mu_);
        cv_.wait_until(lock, deadline, [&] { return value_.has_value(); });
        if (!value_) left_ = true;
        return std::move(value_);
    }

private:
    std::mutex mu_;
    std::condition_variable cv_;
    std::optional<T> value_;
    bool left_ = false;
};

// One private loop on its own thread. Shared by every sync object alive (each holds a
// reference); the last reference stops the thread and joins it. Thread-safe.
class SyncEngine {
public:
    // The running engine, or a new one (its thread started) when none is alive.
    static std::shared_ptr<SyncEngine> acquire();
    // Whether any engine's thread is running.
    static bool running() noexcept;

    // Lets the loop's run() return once its pipes have closed, and joins the thread.
    ~SyncEngine();
    SyncEngine(const SyncEngine&) = delete;
    SyncEngine& operator=(const SyncEngine&) = delete;

    // Queues fn to run on the loop thread (Loop::post: one queue, one wake-up handle).
    void post(std::function<void()> fn) { loop_->post(std::move(fn)); }
    // The private loop. Its members are for the loop thread (inside posted functions).
    Loop& loop() noexcept { return *loop_; }

    SyncEngine() = default;  // for acquire()

private:
    void start();
    Loop* loop_ = nullptr;  // owned by the thread, which destroys it once stop_posted_ is set
    std::shared_ptr<Handoff<bool>> stop_posted_ = std::make_shared<Handoff<bool>>();
    std::thread thread_;
};

// The user's half of a blocking object: the engine and the loop half (Side, loop-thread only,
// with a close()). Going away closes the loop half on the loop, not waiting, then lets go of
// the engine; the loop drops the side once that has run.
template <class Side>
struct SyncHalf {
    std::shared_ptr<SyncEngine> engine;
    std::shared_ptr<Side> side;
    SyncHalf(std::shared_ptr<SyncEngine> e, std::shared_ptr<Side> s)
        : engine(std::move(e)), side(std::move(s)) {}
    ~SyncHalf() {
        engine->post([side = std::move(side)] {
            if (side) side->close();
        });
    }
    SyncHalf(const SyncHalf&) = delete;
    SyncHalf& operator=(const SyncHalf&) = delete;
};

// How long past its own timeout a call waits for the loop to report: the loop's timer fires
// first unless the machine is stalled, so this only bounds a wait that would otherwise hang.
inline constexpr std::chrono::milliseconds kLoopGrace{5000};

// Runs start(done) on the engine's loop; the loop side calls done(T) once, now or later. Waits
// until `timeout` + kLoopGrace; nullopt when nothing came by then. A value that comes after
// the caller left goes to `abandoned` on the loop thread (to close what it opened).
template <class T, class Start>
std::optional<T> sync_call(SyncEngine& engine, std::chrono::milliseconds timeout, Start start,
                           std::function<void(T&)> abandoned = {}) {
    auto handoff = std::make_shared<Handoff<T>>();
    const auto deadline = std::chrono::steady_clock::now() + timeout + kLoopGrace;
    engine.post([handoff, start = std::move(start), abandoned = std::move(abandoned)]() mutable {
        start([handoff, abandoned](T value) {
            if (!handoff->set(value) && abandoned) abandoned(value);
        });
    });
    return handoff->wait_until(deadline);
}

// Calls done exactly once on the loop thread: with the operation's value, or with expired()'s
// when `timeout` passes first. The returned function may be called any number of times.
template <class T>
std::function<void(T)> bounded(Loop& loop, std::chrono::milliseconds timeout,
                               std::function<void(T)> done, std::function<T()> expired) {
    struct Once {
        std::function<void(T)> done;
        Timer timer;
    };
    auto once = std::make_shared<Once>();
    once->done = std::move(done);
    once->timer = loop.call_later(timeout, [once, expired = std::move(expired)] {
        if (auto d = std::exchange(once->done, nullptr)) d(expired());
    });
    return [once](T value) {
        if (auto d = std::exchange(once->done, nullptr)) {
            once->timer.cancel();
            d(std::move(value));
        }
    };
}

// An end that callers may wait for (a pipe's EndInfo, a packet connection's Error): each waiter
// runs once, when the end comes, or at once if it came. Loop-thread only.
template <class E>
struct EndWatch {
    std::optional<E> end;
    std::vector<std::function<void(const E&)>> waiters;

    void ended(const E& e) {
        end = e;
        auto now = std::move(waiters);
        for (auto& w : now) w(e);
    }
    void when(std::function<void(const E&)> fn) {
        if (end)
            fn(*end);
        else
            waiters.push_back(std::move(fn));
    }
};

// Loop side of a blocking close: close() starts it; done gets result(end) once `watch` has
// ended, or errc::sync_timeout naming `what` when `timeout` passes first.
template <class T, class E, class Close, class ToResult>
void close_and_wait(Loop& loop, std::chrono::milliseconds timeout, const char* what,
                    std::function<void(T)> done, EndWatch<E>& watch, Close close, ToResult result) {
    auto once = bounded<T>(loop, timeout, std::move(done),
                           [what, timeout] { return T(sync_timeout_error(what, timeout)); });
    close();
    watch.when([once, result](const E& e) { once(result(e)); });
}

}  // namespace pipeworks::detail
