#include <pipeworks/loop.hpp>

#include "platform/loop_core.hpp"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iterator>
#include <new>
#include <utility>

namespace pipeworks {
namespace detail {

struct TimerState final : Resource {
    uv_timer_t timer{};
    LoopCore* core = nullptr;
    std::function<void()> fn;
    bool active = false;
    bool closing = false;
    // A zero delay: no uv_timer (libuv 1.44 would run it in the timer phase that set it); the
    // loop's deferred list runs it, and that entry ends the state.
    bool deferred = false;
    std::shared_ptr<TimerState> self;  // alive until the handle's close callback (or the entry)

    void close() {
        if (closing) return;
        active = false;
        if (deferred) return;  // the deferred entry still points here; it finishes the state
        closing = true;
        core->remove(this);
        close_handle(*core, reinterpret_cast<uv_handle_t*>(&timer), [](uv_handle_t* h) {
            auto* t = static_cast<TimerState*>(h->data);
            closed_handle(*t->core);
            t->self.reset();  // may destroy *t
        });
    }
    void shutdown_silently() override {
        fn = nullptr;
        if (deferred) {
            // The loop is going away and discards the deferred entry without running it.
            active = false;
            closing = true;
            core->remove(this);
            auto last = std::move(self);  // may destroy *this on return
            return;
        }
        close();
    }
    // The deferred entry's turn.
    void run_deferred() {
        auto keep = std::move(self);
        closing = true;
        core->remove(this);
        if (!active) return;
        active = false;
        auto f = std::move(fn);
        fn = nullptr;
        if (f) f();
    }
};

struct SignalState final : Resource {
    uv_signal_t signal{};
    LoopCore* core = nullptr;
    std::function<void(int)> fn;
    bool active = false;
    std::shared_ptr<SignalState> self;

    void close() {
        if (!active) return;
        active = false;
        fn = nullptr;
        core->remove(this);
        close_handle(*core, reinterpret_cast<uv_handle_t*>(&signal), [](uv_handle_t* h) {
            auto* s = static_cast<SignalState*>(h->data);
            closed_handle(*s->core);
            s->self.reset();
        });
    }
    void shutdown_silently() override { close(); }
};

void close_handle(LoopCore& core, uv_handle_t* h, uv_close_cb cb) {
    ++core.closing_handles;
    uv_close(h, cb);
}

void closed_handle(LoopCore& core) noexcept {
    --core.closing_handles;
}

void LoopCore::report_exception(std::exception_ptr e) noexcept {
    if (!pending_exception) pending_exception = std::move(e);
    uv_stop(loop);
}

namespace {
void run_flushes(LoopCore* core) {
    core->flushing.swap(core->flush_list);
    uv_check_stop(&core->check);
    uv_prepare_stop(&core->prepare);
    for (std::size_t i = 0; i < core->flushing.size(); ++i) {
        Flushable* f = core->flushing[i];
        if (f == nullptr) continue;  // cancelled while flushing
        f->flush_scheduled = false;
        // The other pipes' writes still go out: their flags were cleared with this swap.
        try {
            f->flush();
        } catch (...) {
            core->report_exception(std::current_exception());
        }
    }
    core->flushing.clear();
}

void stop_deferring(LoopCore* c) {
    uv_idle_stop(&c->defer_idle);
    uv_check_stop(&c->defer_check);
}

// Check phase: what was deferred up to here runs in the next iteration's idle phase.
void seal_deferred(LoopCore* c) {
    if (c->ready.empty()) {
        c->ready.swap(c->deferred);
    } else {
        c->ready.insert(c->ready.end(), std::make_move_iterator(c->deferred.begin()),
                        std::make_move_iterator(c->deferred.end()));
        c->deferred.clear();
    }
    if (c->ready.empty()) stop_deferring(c);
}

// Idle phase: runs the sealed batch. What these functions defer lands in `deferred`, so it
// waits for this iteration's check and runs in the next one.
void run_ready(LoopCore* c) {
    std::size_t i = 0;
    while (i < c->ready.size()) {
        auto fn = std::move(c->ready[i]);
        ++i;
        try {
            fn();
        } catch (...) {
            c->report_exception(std::current_exception());
            break;  // the rest run when the loop runs again
        }
    }
    c->ready.erase(c->ready.begin(), c->ready.begin() + static_cast<std::ptrdiff_t>(i));
    if (c->ready.empty() && c->deferred.empty()) stop_deferring(c);
}
}  // namespace

void LoopCore::defer(std::function<void()> fn) {
    if (destroying) return;
    const bool was_empty = deferred.empty() && ready.empty();
    if (owned && !iterating) {
        // No iteration is under way (only Loop::run*() runs an owned loop), so the next one is
        // already a later one; what earlier iterations deferred goes first.
        seal_deferred(this);
        ready.push_back(std::move(fn));
    } else {
        deferred.push_back(std::move(fn));
    }
    if (was_empty) {
        uv_idle_start(&defer_idle,
                      [](uv_idle_t* h) { run_ready(static_cast<LoopCore*>(h->data)); });
        uv_check_start(&defer_check,
                       [](uv_check_t* h) { seal_deferred(static_cast<LoopCore*>(h->data)); });
    }
}

void LoopCore::schedule_flush(Flushable* f) {
    if (f->flush_scheduled) return;
    f->flush_scheduled = true;
    if (flush_list.empty()) {
        uv_check_start(&check, [](uv_check_t* h) { run_flushes(static_cast<LoopCore*>(h->data)); });
        uv_prepare_start(&prepare,
                         [](uv_prepare_t* h) { run_flushes(static_cast<LoopCore*>(h->data)); });
    }
    flush_list.push_back(f);
}

void LoopCore::cancel_flush(Flushable* f) noexcept {
    if (!f->flush_scheduled) return;
    f->flush_scheduled = false;
    if (auto it = std::find(flush_list.begin(), flush_list.end(), f); it != flush_list.end()) {
        flush_list.erase(it);
        if (flush_list.empty()) {
            uv_check_stop(&check);
            uv_prepare_stop(&prepare);
        }
    }
    std::replace(flushing.begin(), flushing.end(), f, static_cast<Flushable*>(nullptr));
}

char* LoopCore::new_read_block(ReadBlock*& slot, std::size_t size) {
    if (slot) {
        // Kept by a write, or too small: the write keeps it, this loop reads elsewhere.
        size = std::max(size, slot->size);
        release(slot);
        slot = nullptr;
    }
    for (std::size_t i = 0; i < spare_blocks.size(); ++i) {
        if (spare_blocks[i]->size >= size) {
            slot = spare_blocks[i];
            spare_blocks.erase(spare_blocks.begin() + static_cast<std::ptrdiff_t>(i));
            slot->refs = 1;
            return slot->data();
        }
    }
    void* mem = ::operator new(sizeof(ReadBlock) + size);
    slot = new (mem) ReadBlock{1, size};
    return slot->data();
}

void LoopCore::release(ReadBlock* b) noexcept {
    if (--b->refs != 0) return;
    // A few spares make a relay's steady state allocation-free; more would only hold memory.
    constexpr std::size_t kMaxSpares = 4;
    if (spare_blocks.size() < kMaxSpares && !destroying) {
        spare_blocks.push_back(b);
        return;
    }
    b->~ReadBlock();
    ::operator delete(b);
}

void LoopCore::free_blocks() noexcept {
    for (ReadBlock* b : spare_blocks) {
        b->~ReadBlock();
        ::operator delete(b);
    }
    spare_blocks.clear();
    for (ReadBlock** slot : {&read_block, &plain_block}) {
        if (ReadBlock* b = *slot) {
            *slot = nullptr;
            release(b);
        }
    }
}

void add_waiter(Loop& loop, LoopWaiter* w) noexcept {
    auto& c = loop.core();
    w->prev = nullptr;
    w->next = c.waiters;
    if (c.waiters) c.waiters->prev = w;
    c.waiters = w;
}

void remove_waiter(Loop& loop, LoopWaiter* w) noexcept {
    auto& c = loop.core();
    if (w->prev)
        w->prev->next = w->next;
    else if (c.waiters == w)
        c.waiters = w->next;
    if (w->next) w->next->prev = w->prev;
    w->prev = w->next = nullptr;
}

bool loop_closing(const Loop& loop) noexcept {
    return const_cast<Loop&>(loop).core().destroying;
}

void report_exception(Loop& loop, std::exception_ptr e) noexcept {
    loop.core().report_exception(std::move(e));
}

}  // namespace detail

namespace {

void ignore_sigpipe() {
    // A peer that resets during a write must give EPIPE, not kill the process. Only a default
    // disposition is replaced, so an application's own handler stays.
    struct sigaction current {};
    if (sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) {
        struct sigaction ign {};
        ign.sa_handler = SIG_IGN;
        sigemptyset(&ign.sa_mask);
        sigaction(SIGPIPE, &ign, nullptr);
    }
}

void init_core(detail::LoopCore& c) {
    ignore_sigpipe();
    uv_async_init(c.loop, &c.async, [](uv_async_t* h) {
        auto* core = static_cast<detail::LoopCore*>(h->data);
        std::vector<std::function<void()>> batch;
        {
            std::lock_guard lock(core->posted_mu);
            batch.swap(core->posted);
        }
        for (std::size_t i = 0; i < batch.size(); ++i) {
            try {
                batch[i]();
            } catch (...) {
                core->report_exception(std::current_exception());
                // The rest keep their place ahead of anything posted since.
                std::lock_guard lock(core->posted_mu);
                core->posted.insert(
                    core->posted.begin(),
                    std::make_move_iterator(batch.begin() + static_cast<std::ptrdiff_t>(i + 1)),
                    std::make_move_iterator(batch.end()));
                uv_async_send(&core->async);
                break;
            }
        }
    });
    c.async.data = &c;
    uv_unref(reinterpret_cast<uv_handle_t*>(&c.async));
    uv_check_init(c.loop, &c.check);
    c.check.data = &c;
    uv_unref(reinterpret_cast<uv_handle_t*>(&c.check));
    uv_prepare_init(c.loop, &c.prepare);
    c.prepare.data = &c;
    uv_unref(reinterpret_cast<uv_handle_t*>(&c.prepare));
    uv_timer_init(c.loop, &c.run_timer);
    c.run_timer.data = &c;
    uv_unref(reinterpret_cast<uv_handle_t*>(&c.run_timer));
    uv_prepare_init(c.loop, &c.run_prepare);
    c.run_prepare.data = &c;
    uv_unref(reinterpret_cast<uv_handle_t*>(&c.run_prepare));
    // Referenced: active only while something is deferred, and then run() must go on.
    uv_idle_init(c.loop, &c.defer_idle);
    c.defer_idle.data = &c;
    uv_check_init(c.loop, &c.defer_check);
    c.defer_check.data = &c;
    uv_unref(reinterpret_cast<uv_handle_t*>(&c.defer_check));
    c.init_deadline_timer();
}

}  // namespace

Loop::Loop() : core_(std::make_unique<detail::LoopCore>()) {
    int rc = uv_loop_init(&core_->own_loop);
    if (rc != 0) {
        std::fprintf(stderr, "pipeworks: uv_loop_init: %s\n", uv_strerror(rc));
        std::abort();
    }
    core_->loop = &core_->own_loop;
    core_->owned = true;
    init_core(*core_);
}

Loop::Loop(uv_loop_s* borrowed) : core_(std::make_unique<detail::LoopCore>()) {
    core_->loop = borrowed;
    init_core(*core_);
}

Loop::~Loop() {
    auto& c = *core_;
    c.destroying = true;
    // Coroutines wake once no pipe or timer callback can run any more, so none resumes twice;
    // what a woken one opens or schedules is shut down in the next round.
    while (c.resources || c.waiters) {
        while (c.resources) c.resources->shutdown_silently();
        while (c.waiters) {
            detail::LoopWaiter* w = c.waiters;
            detail::remove_waiter(*this, w);
            w->loop_closing();
        }
    }
    {
        // Dropped unrun; what they hold is released now, while the loop is still whole.
        auto deferred = std::move(c.deferred);
        auto ready = std::move(c.ready);
    }
    c.deadlines.clear();
    for (uv_handle_t* h :
         {reinterpret_cast<uv_handle_t*>(&c.async), reinterpret_cast<uv_handle_t*>(&c.check),
          reinterpret_cast<uv_handle_t*>(&c.prepare), reinterpret_cast<uv_handle_t*>(&c.run_timer),
          reinterpret_cast<uv_handle_t*>(&c.run_prepare),
          reinterpret_cast<uv_handle_t*>(&c.defer_idle),
          reinterpret_cast<uv_handle_t*>(&c.defer_check),
          reinterpret_cast<uv_handle_t*>(&c.deadline_timer),
          reinterpret_cast<uv_handle_t*>(&c.deadline_poll)}) {
        if (h == reinterpret_cast<uv_handle_t*>(&c.deadline_poll) && c.deadline_fd < 0) continue;
        detail::close_handle(c, h, [](uv_handle_t* handle) {
            detail::closed_handle(*static_cast<detail::LoopCore*>(handle->data));
        });
    }
    // Close callbacks run in the closing phase of the next iteration; NOWAIT never blocks.
    while (c.closing_handles > 0) uv_run(c.loop, UV_RUN_NOWAIT);
    if (c.deadline_fd >= 0) ::close(c.deadline_fd);  // the poll on it has closed
    c.free_blocks();  // every pipe released the blocks it kept when its handle closed
    if (c.owned) {
        if (uv_loop_close(c.loop) == UV_EBUSY) {
            // Handles the application opened directly on our loop: close them too.
            uv_walk(
                c.loop,
                [](uv_handle_t* h, void*) {
                    if (!uv_is_closing(h)) uv_close(h, nullptr);
                },
                nullptr);
            uv_run(c.loop, UV_RUN_DEFAULT);
            uv_loop_close(c.loop);
        }
    }
}

namespace {
// How many Loops this thread is running (nested runs of different loops count each): the
// blocking facade refuses to wait on such a thread, where waiting would stall a loop.
thread_local int loops_running_here = 0;

// Marks the calling thread as the loop's thread for the duration of a run.
struct RunningScope {
    std::atomic<std::thread::id>& slot;
    std::thread::id previous;
    explicit RunningScope(std::atomic<std::thread::id>& s)
        : slot(s), previous(s.exchange(std::this_thread::get_id())) {
        ++loops_running_here;
    }
    ~RunningScope() {
        --loops_running_here;
        slot.store(previous);
    }
    RunningScope(const RunningScope&) = delete;
    RunningScope& operator=(const RunningScope&) = delete;
};

int run_uv(detail::LoopCore& c, uv_run_mode mode) {
    struct Iterating {
        detail::LoopCore& c;
        bool previous;
        ~Iterating() { c.iterating = previous; }
    } scope{c, std::exchange(c.iterating, true)};
    return uv_run(c.loop, mode);
}

void rethrow_pending(detail::LoopCore& c) {
    if (c.pending_exception) std::rethrow_exception(std::exchange(c.pending_exception, nullptr));
}
}  // namespace

bool detail::running_a_loop() noexcept {
    return loops_running_here > 0;
}

bool Loop::run() {
    auto& c = *core_;
    RunningScope scope(c.running);
    c.stop_requested = false;
    run_uv(c, UV_RUN_DEFAULT);
    bool stopped = std::exchange(c.stop_requested, false);
    rethrow_pending(c);
    return !stopped;
}

bool Loop::run_once() {
    auto& c = *core_;
    RunningScope scope(c.running);
    bool more = run_uv(c, UV_RUN_ONCE) != 0;
    rethrow_pending(c);
    return more;
}

bool Loop::run_nowait() {
    auto& c = *core_;
    RunningScope scope(c.running);
    bool more = run_uv(c, UV_RUN_NOWAIT) != 0;
    rethrow_pending(c);
    return more;
}

bool Loop::run_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
    auto& c = *core_;
    RunningScope scope(c.running);
    bool timed_out = false;
    c.run_timer.data = &timed_out;
    uv_ref(reinterpret_cast<uv_handle_t*>(&c.run_timer));
    uv_update_time(c.loop);  // the timeout counts from this call, not from the last iteration
    uv_timer_start(
        &c.run_timer,
        [](uv_timer_t* t) {
            *static_cast<bool*>(t->data) = true;
            // Timers run before the poll of the same iteration; without a stop, that poll
            // could wait with no timeout left.
            uv_stop(t->loop);
        },
        static_cast<std::uint64_t>(std::max<std::int64_t>(0, timeout.count())), 0);
    // A timer callback at the start of an iteration may make pred true; the poll after it
    // would then wait for the next event (or the timeout) before the check below saw it.
    struct Watch {
        const std::function<bool()>& pred;
        detail::LoopCore& c;
    } watch{pred, c};
    c.run_prepare.data = &watch;
    uv_prepare_start(&c.run_prepare, [](uv_prepare_t* h) {
        auto& w = *static_cast<Watch*>(h->data);
        try {
            if (w.pred()) uv_stop(h->loop);  // the poll does not wait; uv_run returns
        } catch (...) {
            w.c.report_exception(std::current_exception());
        }
    });
    struct Disarm {
        detail::LoopCore& c;
        ~Disarm() {
            uv_timer_stop(&c.run_timer);
            uv_unref(reinterpret_cast<uv_handle_t*>(&c.run_timer));
            c.run_timer.data = &c;
            uv_prepare_stop(&c.run_prepare);
            c.run_prepare.data = &c;
        }
    } disarm{c};
    bool done = pred();
    while (!done && !timed_out) {
        run_uv(c, UV_RUN_ONCE);
        rethrow_pending(c);
        done = pred();
    }
    rethrow_pending(c);
    return done;
}

void Loop::stop() {
    core_->stop_requested = true;
    uv_stop(core_->loop);
}

void Loop::post(std::function<void()> fn) {
    {
        std::lock_guard lock(core_->posted_mu);
        core_->posted.push_back(std::move(fn));
    }
    uv_async_send(&core_->async);
}

Timer Loop::call_later(std::chrono::milliseconds delay, std::function<void()> fn) {
    auto& c = *core_;
    auto state = std::make_shared<detail::TimerState>();
    state->core = &c;
    state->fn = std::move(fn);
    state->active = true;
    if (delay.count() <= 0) {
        if (c.destroying) return Timer();
        state->deferred = true;
        // A raw pointer keeps the entry in std::function's inline buffer; `self` keeps the
        // state alive until the entry runs, or until ~Loop shuts the state down.
        c.defer([t = state.get()] { t->run_deferred(); });
        state->self = state;
        c.add(state.get());
        return Timer(state);
    }
    state->self = state;
    uv_timer_init(c.loop, &state->timer);
    state->timer.data = state.get();
    c.add(state.get());
    // From now, not from the start of the iteration: after blocking work the cached clock lags.
    uv_update_time(c.loop);
    uv_timer_start(
        &state->timer,
        [](uv_timer_t* h) {
            auto* t = static_cast<detail::TimerState*>(h->data);
            auto keep = t->self;
            auto fn = std::move(t->fn);
            t->close();
            try {
                if (fn) fn();
            } catch (...) {
                t->core->report_exception(std::current_exception());
            }
        },
        // The loop clock is whole milliseconds, truncated: a timer due `delay` after it fires
        // up to a millisecond before `delay` has really passed, unless it waits one more.
        static_cast<std::uint64_t>(delay.count()) + 1, 0);
    return Timer(state);
}

SignalWatch Loop::on_signal(int signum, std::function<void(int)> fn) {
    auto state = std::make_shared<detail::SignalState>();
    state->core = core_.get();
    state->fn = std::move(fn);
    state->self = state;
    uv_signal_init(core_->loop, &state->signal);
    state->signal.data = state.get();
    state->active = true;
    core_->add(state.get());
    uv_signal_start(
        &state->signal,
        [](uv_signal_t* h, int sig) {
            auto* s = static_cast<detail::SignalState*>(h->data);
            auto keep = s->self;
            try {
                auto fn = s->fn;  // the handler may cancel its own watch
                if (fn) fn(sig);
            } catch (...) {
                s->core->report_exception(std::current_exception());
            }
        },
        signum);
    uv_unref(reinterpret_cast<uv_handle_t*>(&state->signal));
    return SignalWatch(state);
}

void SignalWatch::cancel() {
    if (state_) state_->close();
}

bool SignalWatch::active() const {
    return state_ && state_->active;
}

std::uint64_t Loop::now_ms() const {
    return uv_now(core_->loop);
}

uv_loop_s* Loop::native() const noexcept {
    return core_->loop;
}

void Timer::cancel() {
    if (state_ && state_->active) {
        state_->fn = nullptr;
        state_->close();
    }
}

bool Timer::active() const {
    return state_ && state_->active;
}

}  // namespace pipeworks
