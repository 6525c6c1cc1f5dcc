#include <pipeworks/loop.hpp>

#include "platform/loop_core.hpp"

#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

namespace pipeworks {
namespace detail {

struct TimerState final : Resource {
    uv_timer_t timer{};
    LoopCore* core = nullptr;
    std::function<void()> fn;
    bool active = false;
    bool closing = false;
    std::shared_ptr<TimerState> self;  // alive until the handle's close callback

    void close() {
        if (closing) return;
        closing = true;
        active = false;
        core->remove(this);
        close_handle(*core, reinterpret_cast<uv_handle_t*>(&timer), [](uv_handle_t* h) {
            auto* t = static_cast<TimerState*>(h->data);
            closed_handle(*t->core);
            t->self.reset();  // may destroy *t
        });
    }
    void shutdown_silently() override {
        fn = nullptr;
        close();
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

namespace {
void run_flushes(LoopCore* core) {
    core->flushing.swap(core->flush_list);
    uv_check_stop(&core->check);
    uv_prepare_stop(&core->prepare);
    for (std::size_t i = 0; i < core->flushing.size(); ++i) {
        Flushable* f = core->flushing[i];
        if (f == nullptr) continue;  // cancelled while flushing
        f->flush_scheduled = false;
        f->flush();
    }
    core->flushing.clear();
}
}  // namespace

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

void LoopCore::grow_read_buffer(std::size_t size) {
    read_buf = std::make_unique<char[]>(size);
    read_buf_size = size;
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
        for (auto& fn : batch) fn();
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
    while (c.resources) c.resources->shutdown_silently();
    for (uv_handle_t* h :
         {reinterpret_cast<uv_handle_t*>(&c.async), reinterpret_cast<uv_handle_t*>(&c.check),
          reinterpret_cast<uv_handle_t*>(&c.prepare),
          reinterpret_cast<uv_handle_t*>(&c.run_timer)}) {
        detail::close_handle(c, h, [](uv_handle_t* handle) {
            detail::closed_handle(*static_cast<detail::LoopCore*>(handle->data));
        });
    }
    // Close callbacks run in the closing phase of the next iteration; NOWAIT never blocks.
    while (c.closing_handles > 0) uv_run(c.loop, UV_RUN_NOWAIT);
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
// Marks the calling thread as the loop's thread for the duration of a run.
struct RunningScope {
    std::atomic<std::thread::id>& slot;
    std::thread::id previous;
    explicit RunningScope(std::atomic<std::thread::id>& s)
        : slot(s), previous(s.exchange(std::this_thread::get_id())) {}
    ~RunningScope() { slot.store(previous); }
};
}  // namespace

bool Loop::run() {
    RunningScope scope(core_->running);
    core_->stop_requested = false;
    uv_run(core_->loop, UV_RUN_DEFAULT);
    bool stopped = core_->stop_requested;
    core_->stop_requested = false;
    return !stopped;
}

bool Loop::run_once() {
    return uv_run(core_->loop, UV_RUN_ONCE) != 0;
}

bool Loop::run_nowait() {
    return uv_run(core_->loop, UV_RUN_NOWAIT) != 0;
}

bool Loop::run_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
    auto& c = *core_;
    RunningScope scope(c.running);
    bool timed_out = false;
    c.run_timer.data = &timed_out;
    uv_ref(reinterpret_cast<uv_handle_t*>(&c.run_timer));
    uv_timer_start(
        &c.run_timer,
        [](uv_timer_t* t) {
            *static_cast<bool*>(t->data) = true;
            // Timers run before the poll of the same iteration; without a stop, that poll
            // could wait with no timeout left.
            uv_stop(t->loop);
        },
        static_cast<std::uint64_t>(std::max<std::int64_t>(0, timeout.count())), 0);
    bool done = pred();
    while (!done && !timed_out) {
        uv_run(c.loop, UV_RUN_ONCE);
        done = pred();
    }
    uv_timer_stop(&c.run_timer);
    uv_unref(reinterpret_cast<uv_handle_t*>(&c.run_timer));
    c.run_timer.data = &c;
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
    auto state = std::make_shared<detail::TimerState>();
    state->core = core_.get();
    state->fn = std::move(fn);
    state->self = state;
    state->active = true;
    uv_timer_init(core_->loop, &state->timer);
    state->timer.data = state.get();
    core_->add(state.get());
    uv_timer_start(
        &state->timer,
        [](uv_timer_t* h) {
            auto* t = static_cast<detail::TimerState*>(h->data);
            auto keep = t->self;
            auto fn = std::move(t->fn);
            t->close();
            if (fn) fn();
        },
        static_cast<std::uint64_t>(std::max<std::int64_t>(0, delay.count())), 0);
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
            auto fn = s->fn;  // the handler may cancel its own watch
            if (fn) fn(sig);
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
