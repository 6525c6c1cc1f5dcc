// Task<T>: a C++20 coroutine that runs on a Loop and awaits pipeworks operations (await.hpp)
// and other tasks; spawn() starts one from plain code.
//
// Threading: a task is bound to its loop's thread. spawn(), TaskHandle and every co_await run
// there; a task resumes inside the loop's callbacks, never on another thread.
//
// Lifetime: a Task is lazy: its body starts only when spawn()ed or co_awaited. A spawned task
// owns its frame and frees it when it returns or throws. A task suspended on a pipeworks
// awaitable when its Loop is destroyed is resumed there with errc::loop_closed (each later
// co_await completes at once the same way), so it runs to its end before ~Loop returns: nothing
// leaks, and nothing resumes into a freed frame. A task suspended on a foreign awaitable is not
// known to the loop.
#pragma once

#include <pipeworks/error.hpp>
#include <pipeworks/export.hpp>
#include <pipeworks/loop.hpp>

#include <coroutine>
#include <cstdint>
#include <exception>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace pipeworks {

template <class T = void>
class Task;

namespace detail {

// Why a wait ended before its operation completed.
enum class Interrupt : std::uint8_t { cancelled, loop_closed, deadline };

// "what: the task was cancelled", with errc::cancelled, loop_closed or deadline_passed.
PIPEWORKS_API Error interrupt_error(Interrupt why, std::string_view what);

// A co_await of a pipeworks operation, suspended (await.hpp's awaiters).
class Suspended {
public:
    std::coroutine_handle<> coroutine;
    // The operation will not complete this wait: stop it where it can be stopped (except for
    // loop_closed: the loop has dropped its callbacks already) and set the result for `why`.
    virtual void interrupted(Interrupt why) noexcept = 0;

protected:
    ~Suspended() = default;
};

// One chain of tasks: the task spawn() started and the tasks it awaits. One of them runs at a
// time, so the chain has at most one suspended wait. Counted references (loop thread only):
// its frames, its TaskHandles and the operation callbacks still pending hold one each, so a
// callback that outlives its wait finds the chain and sees, by the generation, that its wait
// is over.
class TaskChain final : public LoopWaiter {
public:
    explicit TaskChain(Loop& loop) : loop_(&loop) {}
    TaskChain(const TaskChain&) = delete;
    TaskChain& operator=(const TaskChain&) = delete;

    void retain() noexcept { ++refs_; }
    void release() noexcept {
        if (--refs_ == 0) delete this;
    }

    Loop& loop() const noexcept { return *loop_; }
    bool cancelled() const noexcept { return cancelled_; }
    bool finished() const noexcept { return finished_; }
    void finish() noexcept { finished_ = true; }

    // Starts the wait `s` on `loop` (listed there for ~Loop); returns its generation, which
    // its completion presents to take().
    std::uint64_t suspend(Loop& loop, Suspended* s) noexcept {
        current_ = s;
        wait_loop_ = &loop;
        add_waiter(loop, this);
        return ++generation_;
    }
    // The wait `gen`, if it is still the one suspended: it is no longer, and is returned.
    // Null for a wait already over (completed or interrupted).
    Suspended* take(std::uint64_t gen) noexcept {
        if (current_ == nullptr || gen != generation_) return nullptr;
        Suspended* s = current_;
        current_ = nullptr;
        remove_waiter(*wait_loop_, this);
        return s;
    }
    // Ends the wait `gen` (if it is still suspended) for `why`, and resumes its task here.
    void interrupt(std::uint64_t gen, Interrupt why) noexcept {
        if (Suspended* s = take(gen)) {
            s->interrupted(why);
            s->coroutine.resume();
        }
    }
    void cancel() noexcept {
        cancelled_ = true;
        interrupt(generation_, Interrupt::cancelled);
    }
    void loop_closing() noexcept override { interrupt(generation_, Interrupt::loop_closed); }

private:
    ~TaskChain() = default;
    Loop* loop_;
    Loop* wait_loop_ = nullptr;
    Suspended* current_ = nullptr;
    std::uint64_t generation_ = 0;
    std::uint32_t refs_ = 0;
    bool cancelled_ = false;
    bool finished_ = false;
};

// A counted reference to a TaskChain. Loop-thread-bound, like the chain.
class ChainRef {
public:
    ChainRef() = default;
    explicit ChainRef(TaskChain* c) noexcept : c_(c) {
        if (c_) c_->retain();
    }
    ChainRef(const ChainRef& o) noexcept : ChainRef(o.c_) {}
    ChainRef(ChainRef&& o) noexcept : c_(std::exchange(o.c_, nullptr)) {}
    ChainRef& operator=(ChainRef o) noexcept {
        std::swap(c_, o.c_);
        return *this;
    }
    ~ChainRef() {
        if (c_) c_->release();
    }
    TaskChain* operator->() const noexcept { return c_; }
    TaskChain& operator*() const noexcept { return *c_; }
    explicit operator bool() const noexcept { return c_ != nullptr; }

private:
    TaskChain* c_ = nullptr;
};

// What every Task's promise has: who awaits it, what it threw, and its chain.
struct PromiseBase {
    std::coroutine_handle<> continuation;  // the awaiting task; null for a spawned one
    std::exception_ptr exception;
    ChainRef chain;
    bool root = false;  // started by spawn(): its end runs spawn()'s completion

    std::suspend_always initial_suspend() noexcept { return {}; }
    void unhandled_exception() noexcept { exception = std::current_exception(); }
};

}  // namespace detail

// How a spawned task ended: its value, or the exception it threw. get() returns the value or
// rethrows the exception. A plain value, not bound to any thread.
template <class T>
struct TaskOutcome {
    std::exception_ptr exception;
    std::optional<T> value;

    T& get() {
        if (exception) std::rethrow_exception(exception);
        return *value;
    }
    explicit operator bool() const noexcept { return !exception; }
};

template <>
struct TaskOutcome<void> {
    std::exception_ptr exception;

    void get() const {
        if (exception) std::rethrow_exception(exception);
    }
    explicit operator bool() const noexcept { return !exception; }
};

namespace detail {

template <class T>
class Promise;

template <class T>
struct FinalAwaiter {
    bool await_ready() noexcept { return false; }
    std::coroutine_handle<> await_suspend(std::coroutine_handle<Promise<T>> h) noexcept {
        Promise<T>& p = h.promise();
        if (p.continuation) return p.continuation;  // symmetric transfer to the awaiter
        if (p.root) p.finish_root(h);               // frees the frame
        return std::noop_coroutine();
    }
    void await_resume() noexcept {}
};

template <class T>
class PromiseStore : public PromiseBase {
public:
    template <class U>
    requires std::is_convertible_v<U&&, T>
    void return_value(U&& v) { value_.emplace(std::forward<U>(v)); }
    T take() {
        if (exception) std::rethrow_exception(exception);
        return std::move(*value_);
    }
    TaskOutcome<T> outcome() { return TaskOutcome<T>{exception, std::move(value_)}; }

private:
    std::optional<T> value_;
};

template <>
class PromiseStore<void> : public PromiseBase {
public:
    void return_void() noexcept {}
    void take() {
        if (exception) std::rethrow_exception(exception);
    }
    TaskOutcome<void> outcome() { return TaskOutcome<void>{exception}; }
};

template <class T>
class Promise final : public PromiseStore<T> {
public:
    Task<T> get_return_object() noexcept;
    FinalAwaiter<T> final_suspend() noexcept { return {}; }

    std::function<void(TaskOutcome<T>&)> done;  // spawn()'s completion

    // A spawned task has ended: free the frame first (what it held, pipes included, goes),
    // then run the completion. An exception nobody takes goes to Loop::run().
    void finish_root(std::coroutine_handle<Promise> h) noexcept {
        TaskOutcome<T> out = this->outcome();
        auto fn = std::move(done);
        ChainRef c = std::move(this->chain);
        Loop& loop = c->loop();
        c->finish();
        h.destroy();
        try {
            if (fn)
                fn(out);
            else if (out.exception)
                std::rethrow_exception(out.exception);
        } catch (...) {
            report_exception(loop, std::current_exception());
        }
    }
};

}  // namespace detail

namespace detail {
// co_await on a Task: starts it by symmetric transfer; it transfers back when it ends.
// Loop-thread-bound.
template <class T>
struct TaskAwaiter {
    std::coroutine_handle<Promise<T>> h;
    bool await_ready() const {
        if (!h) throw std::logic_error("co_await on an empty Task");
        return h.done();
    }
    template <class P>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<P> parent) noexcept {
        static_assert(std::is_base_of_v<PromiseBase, P>,
                      "a pipeworks Task is awaited from another Task");
        h.promise().continuation = parent;
        h.promise().chain = parent.promise().chain;
        return h;
    }
    T await_resume() { return h.promise().take(); }
};
}  // namespace detail

// A coroutine returning T. Move-only; lazily started: co_await it from another Task (its
// result, or the exception it threw, comes back there), or spawn() it. Destroying a Task that
// was never started frees its frame without running it. Loop-thread-bound.
template <class T>
class [[nodiscard]] Task {
public:
    using promise_type = detail::Promise<T>;

    Task() = default;
    Task(Task&& o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
    Task& operator=(Task&& o) noexcept {
        if (this != &o) {
            if (h_) h_.destroy();
            h_ = std::exchange(o.h_, nullptr);
        }
        return *this;
    }
    Task(const Task&) = delete;
    Task& operator=(const Task&) = delete;
    ~Task() {
        if (h_) h_.destroy();
    }

    // False for a moved-from or default Task (awaiting one throws std::logic_error).
    bool valid() const noexcept { return static_cast<bool>(h_); }

    // Runs the task until it ends (it runs at once, up to its first suspension), then returns
    // its value or rethrows its exception. Awaitable once, from a Task only:
    // `co_await std::move(t)` or `co_await make_task()`.
    detail::TaskAwaiter<T> operator co_await() && { return detail::TaskAwaiter<T>{h_}; }

private:
    friend class detail::Promise<T>;
    template <class U>
    friend class TaskStarter;
    explicit Task(std::coroutine_handle<promise_type> h) noexcept : h_(h) {}
    std::coroutine_handle<promise_type> h_;
};

// A spawned task, seen from outside: cancel it, or ask whether it has ended. Cheap to copy;
// copies refer to the same task, and may outlive it. Loop-thread-bound.
class TaskHandle {
public:
    TaskHandle() = default;
    explicit TaskHandle(detail::ChainRef c) noexcept : chain_(std::move(c)) {}

    // Cancels the task: the co_await it is suspended in (here or in a task it awaits) ends now,
    // inside this call, with errc::cancelled (see await.hpp for each result type), and so does
    // every later one, at once. The task decides what to do with that; writes already accepted
    // still go out. Harmless on an ended task or an empty handle.
    void cancel() noexcept {
        if (chain_ && !chain_->finished()) chain_->cancel();
    }
    // True once the task has returned or thrown (its completion has run).
    bool done() const noexcept { return chain_ && chain_->finished(); }
    bool cancelled() const noexcept { return chain_ && chain_->cancelled(); }
    explicit operator bool() const noexcept { return static_cast<bool>(chain_); }

private:
    detail::ChainRef chain_;
};

template <class T>
Task<T> detail::Promise<T>::get_return_object() noexcept {
    return Task<T>(std::coroutine_handle<Promise>::from_promise(*this));
}

// Starts `task` on `loop`, detached: it runs at once, inside this call, up to its first
// suspension, and then in the loop's callbacks. When it ends, `done` runs with its TaskOutcome
// (after the frame is freed; possibly inside this call when the task never suspends). Without
// `done`, an exception the task throws is rethrown by the Loop's run() (as a callback's would
// be). Loop thread only. Throws std::logic_error on an empty Task.
template <class T>
TaskHandle spawn(Loop& loop, Task<T> task,
                 std::type_identity_t<std::function<void(TaskOutcome<T>&)>> done = {});

// spawn()'s body: the one place that takes a Task's frame over.
template <class U>
class TaskStarter {
public:
    static TaskHandle start(Loop& loop, Task<U> task, std::function<void(TaskOutcome<U>&)> done) {
        if (!task.h_) throw std::logic_error("spawn: an empty Task");
        auto h = std::exchange(task.h_, nullptr);
        auto& p = h.promise();
        p.chain = detail::ChainRef(new detail::TaskChain(loop));
        p.root = true;
        p.done = std::move(done);
        TaskHandle handle(p.chain);
        h.resume();
        return handle;
    }
};

template <class T>
TaskHandle spawn(Loop& loop, Task<T> task,
                 std::type_identity_t<std::function<void(TaskOutcome<T>&)>> done) {
    return TaskStarter<T>::start(loop, std::move(task), std::move(done));
}

}  // namespace pipeworks
