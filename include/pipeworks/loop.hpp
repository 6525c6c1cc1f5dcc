// Loop: one libuv event loop and everything pipeworks runs on it.
// Bound to the thread that runs it; only post() may be called from other threads.
#pragma once

#include <pipeworks/export.hpp>

#include <chrono>
#include <exception>
#include <functional>
#include <memory>

struct uv_loop_s;

namespace pipeworks {

class Loop;

namespace detail {
struct LoopCore;
struct TimerState;
struct SignalState;

// A coroutine suspended on a loop (pipeworks/task.hpp). ~Loop wakes every one still listed,
// after it has shut the loop's pipes and timers down, so that no frame stays suspended on a
// loop that is gone and none is resumed from a callback after it. Loop-thread-bound.
struct LoopWaiter {
    LoopWaiter* prev = nullptr;
    LoopWaiter* next = nullptr;
    // Resumes the suspended coroutine with a "loop closed" status; it is no longer listed.
    virtual void loop_closing() noexcept = 0;

protected:
    ~LoopWaiter() = default;
};

// Lists / unlists w on loop (w must not be listed already / may be unlisted already).
PIPEWORKS_API void add_waiter(Loop& loop, LoopWaiter* w) noexcept;
PIPEWORKS_API void remove_waiter(Loop& loop, LoopWaiter* w) noexcept;
// True while ~Loop runs: nothing new may wait on the loop then.
PIPEWORKS_API bool loop_closing(const Loop& loop) noexcept;
// Hands an exception no caller can take (a detached task's) to Loop::run(), which rethrows it.
PIPEWORKS_API void report_exception(Loop& loop, std::exception_ptr e) noexcept;
}  // namespace detail

// A cancellable one-shot timer returned by Loop::call_later. Cheap to copy; all copies refer
// to the same timer. Dropping the handle does not cancel the timer. Loop-thread only.
class PIPEWORKS_API Timer {
public:
    Timer() = default;
    // Stops the timer if it has not fired; harmless when it has or on an empty handle.
    void cancel();
    // True while the timer is scheduled and has neither fired nor been cancelled.
    bool active() const;

private:
    friend class Loop;
    explicit Timer(std::shared_ptr<detail::TimerState> s) : state_(std::move(s)) {}
    std::shared_ptr<detail::TimerState> state_;
};

// A signal handler installed by Loop::on_signal; copies refer to the same handler.
// Dropping the handle keeps the handler; cancel() removes it. Loop-thread only.
class PIPEWORKS_API SignalWatch {
public:
    SignalWatch() = default;
    void cancel();
    bool active() const;

private:
    friend class Loop;
    explicit SignalWatch(std::shared_ptr<detail::SignalState> s) : state_(std::move(s)) {}
    std::shared_ptr<detail::SignalState> state_;
};

class PIPEWORKS_API Loop {
public:
    // Creates and owns a new uv_loop_t.
    Loop();
    // Borrows an existing uv_loop_t; the caller runs it and closes it after this Loop is gone.
    explicit Loop(uv_loop_s* borrowed);
    // Closes every pipe and timer still open on this loop, without running their callbacks,
    // then resumes every task suspended on it with errc::loop_closed (task.hpp; each runs to
    // its end here), and waits (on this thread) for libuv to release the handles. Must be
    // called on the loop thread while the loop is not running.
    ~Loop();

    Loop(const Loop&) = delete;
    Loop& operator=(const Loop&) = delete;

    // Runs until stop() is called or nothing is left to do. Returns false after stop().
    //
    // Exceptions: an exception thrown by a function given to call_later(), post() or
    // on_signal() (or by a pipe's callback the library routes here) never unwinds through
    // libuv. It is caught, the loop stops at the end of that iteration (callbacks already due
    // in it still run; a second exception there is dropped), and run(), run_once(),
    // run_nowait() and run_until() rethrow the first one once libuv has returned. The loop
    // stays usable: whatever was still pending runs when it is run again.
    bool run();
    // Runs one iteration, waiting for at least one event. Returns true if more work remains.
    bool run_once();
    // Runs one iteration without waiting. Returns true if more work remains.
    bool run_nowait();
    // Runs until pred() is true or the timeout, counted from this call, passes. pred() is
    // checked after each iteration and before each wait for I/O (so a timer that makes it
    // true ends the run at once): it may be called several times per iteration. Returns
    // pred()'s final value; an exception from pred() is rethrown. Not reentrant: do not call
    // run*() from inside pred() or a callback of this loop (the loop has one deadline timer).
    bool run_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout);
    // Makes run() return after the current iteration. Loop thread only (use post() elsewhere).
    void stop();

    // Thread-safe: queues fn to run on the loop thread in a later iteration. Functions run in
    // the order posted. Ones still queued when the Loop is destroyed are discarded.
    void post(std::function<void()> fn);

    // Calls fn once, at least `delay` after this call (not after the start of the current
    // iteration), and at most about a millisecond more when the loop is idle.
    // A delay of 0 (or less) means a later iteration, never the current one: a callback that
    // keeps re-arming call_later(0) advances one step per iteration, and I/O and other timers
    // run in between. Zero-delay calls run in the order made. Either kind keeps run() going
    // until it has run or is cancelled. Loop thread only.
    Timer call_later(std::chrono::milliseconds delay, std::function<void()> fn);

    // Calls fn(signum) on the loop thread each time the process receives signum, until
    // cancelled. The watch does not keep run() going by itself (a server's pipe does).
    SignalWatch on_signal(int signum, std::function<void(int)> fn);

    // Milliseconds of the loop's cached clock (uv_now), updated at the start of each
    // iteration; it lags behind the real time during long callbacks.
    std::uint64_t now_ms() const;

    uv_loop_s* native() const noexcept;

    detail::LoopCore& core() noexcept { return *core_; }

private:
    std::unique_ptr<detail::LoopCore> core_;
};

}  // namespace pipeworks
