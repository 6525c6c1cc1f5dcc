// The loop's private state, shared by the platform and transport layers. LoopCore owns the
// loop's own libuv handles (cross-thread posts, write flushing, deferred functions, run_until's
// timeout, the one deadline timer), the functions posted or deferred to it, the deadline heap,
// the shared read buffers and the first exception a callback threw. It does not own the pipes
// and timers on the loop: it lists them (Resource) so ~Loop can close what is still open.
#pragma once

#include <pipeworks/loop.hpp>

#include "platform/deadlines.hpp"

#include <uv.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace pipeworks::detail {

// Something with libuv handles on this loop that the Loop must close if it is destroyed first.
struct Resource {
    Resource* prev = nullptr;
    Resource* next = nullptr;
    // Closes the handles without running any user callback.
    virtual void shutdown_silently() = 0;

protected:
    ~Resource() = default;
};

// Work deferred to the end of the loop iteration (write gathering).
struct Flushable {
    bool flush_scheduled = false;
    virtual void flush() = 0;

protected:
    ~Flushable() = default;
};

// A read buffer. Reference-counted (loop thread only) so that a relay can keep the bytes it
// read for the write that forwards them instead of copying them; the loop then reads into
// another block.
struct ReadBlock {
    std::uint32_t refs = 1;
    std::size_t size = 0;
    char* data() noexcept { return reinterpret_cast<char*>(this + 1); }
    bool holds(const char* p, std::size_t n) noexcept {
        return p >= data() && n <= size && p - data() <= static_cast<std::ptrdiff_t>(size - n);
    }
};

struct LoopCore {
    uv_loop_t own_loop{};
    uv_loop_t* loop = nullptr;
    bool owned = false;
    bool destroying = false;
    bool stop_requested = false;
    // The thread inside run*(), or none between runs (any one thread may then set up pipes).
    std::atomic<std::thread::id> running{};
    // Inside uv_run called by Loop::run*(): a deferral then belongs to an iteration under way.
    bool iterating = false;
    // The first exception a callback threw since the last run*() returned (see Loop::run).
    std::exception_ptr pending_exception;

    uv_async_t async{};
    std::mutex posted_mu;
    std::vector<std::function<void()>> posted;

    // Writes issued during an iteration are flushed after I/O callbacks (check) and after
    // timers (prepare), so several sends leave in one system call.
    uv_check_t check{};
    uv_prepare_t prepare{};
    std::vector<Flushable*> flush_list;
    std::vector<Flushable*> flushing;

    uv_timer_t run_timer{};
    // Looks at run_until()'s pred before each poll (a timer may just have made it true).
    uv_prepare_t run_prepare{};

    // Functions deferred to a later iteration. The check handle seals an iteration's
    // deferrals into `ready`; the idle handle runs `ready` early in the next iteration. While
    // either list is non-empty both handles are active, and the idle handle (referenced) keeps
    // the poll from blocking and run() from returning, as a due timer would.
    uv_idle_t defer_idle{};
    uv_check_t defer_check{};
    std::vector<std::function<void()>> deferred;  // deferred in the iteration under way
    std::vector<std::function<void()>> ready;     // run by the next idle phase

    // Deadlines (per-connection timeouts) share one unreferenced timer, set for the earliest:
    // the pipes owning the deadlines keep the loop alive, not the timer.
    DeadlineQueue deadlines;
    uv_timer_t deadline_timer{};
    // On Linux the timer is a timerfd watched by deadline_poll: it stays set in the kernel
    // between polls, where with a libuv timer every epoll_wait that sleeps sets and cancels a
    // kernel timer of its own (about 3 % of a busy server's kernel time, docs/design.md).
    // -1: deadline_timer is used instead (no timerfd).
    int deadline_fd = -1;
    uv_poll_t deadline_poll{};
    std::uint64_t deadline_timer_at = std::numeric_limits<std::uint64_t>::max();  // max: stopped
    bool expiring_deadlines = false;

    // One read buffer for the whole loop: libuv reads synchronously into it and pipeworks
    // dispatches before the next read, so an idle pipe holds no buffer. When a relay keeps the
    // block for a write, the next read takes another one (a released block is kept for reuse).
    ReadBlock* read_block = nullptr;  // the loop holds one reference
    // The same for what a byte filter makes of a read (TLS plaintext), so that a relay keeps
    // decrypted bytes for its write just as it keeps read ones.
    ReadBlock* plain_block = nullptr;
    std::vector<ReadBlock*> spare_blocks;

    // transport/tls_context.cpp's TLS contexts, by settings (loaded once per loop).
    std::shared_ptr<void> tls_contexts;
    // dns/resolver.cpp's Resolver (made on first use; a Resource while it lives).
    std::shared_ptr<void> resolver;

    Resource* resources = nullptr;    // intrusive list of live resources
    LoopWaiter* waiters = nullptr;    // intrusive list of suspended coroutines (task.hpp)
    std::size_t closing_handles = 0;  // uv_close calls whose callback has not run yet

    void add(Resource* r) noexcept {
        r->prev = nullptr;
        r->next = resources;
        if (resources) resources->prev = r;
        resources = r;
    }
    void remove(Resource* r) noexcept {
        if (r->prev)
            r->prev->next = r->next;
        else if (resources == r)
            resources = r->next;
        if (r->next) r->next->prev = r->prev;
        r->prev = r->next = nullptr;
    }

    void schedule_flush(Flushable* f);
    void cancel_flush(Flushable* f) noexcept;
    // The shared read buffer, at least `size` bytes. Inline: libuv asks for it before every read.
    char* read_buffer(std::size_t size) {
        if (read_block && read_block->refs == 1 && read_block->size >= size) [[likely]]
            return read_block->data();
        return new_read_block(read_block, size);
    }
    char* plain_buffer(std::size_t size) {
        if (plain_block && plain_block->refs == 1 && plain_block->size >= size) [[likely]]
            return plain_block->data();
        return new_read_block(plain_block, size);
    }
    // The loop's block (read or plain) that holds [p, p + n), or null.
    ReadBlock* block_holding(const char* p, std::size_t n) const noexcept {
        if (read_block && read_block->holds(p, n)) return read_block;
        if (plain_block && plain_block->holds(p, n)) return plain_block;
        return nullptr;
    }
    char* new_read_block(ReadBlock*& slot, std::size_t size);
    static void retain(ReadBlock* b) noexcept { ++b->refs; }
    void release(ReadBlock* b) noexcept;
    void free_blocks() noexcept;

    // The members below are exported (PIPEWORKS_API) so the white-box tests can call them.

    // Runs fn on the loop thread in a later iteration: never inside this call, never in the
    // iteration under way. Functions run in the order deferred; ones deferred while deferred
    // functions run wait for the next iteration. Pending functions keep run() going and the
    // poll from blocking. ~Loop discards them unrun. Loop thread only.
    PIPEWORKS_API void defer(std::function<void()> fn);

    // Arms d to expire at at_ms (loop clock, see fresh_now_ms), or moves it if it is armed.
    // d.expired runs on the loop thread once at_ms has passed (deadlines due together run in
    // at_ms order) and may arm or disarm any deadline. The owner must disarm d before
    // destroying it; after ~Loop every deadline is not armed. Loop thread only.
    PIPEWORKS_API void arm(Deadline& d, std::uint64_t at_ms);
    // d will not expire (until armed again); harmless if it is not armed.
    PIPEWORKS_API void disarm(Deadline& d) noexcept;
    // The loop clock brought up to date (uv_update_time, uv_now): the base for arm().
    PIPEWORKS_API std::uint64_t fresh_now_ms() noexcept;

    // Keeps the first exception a callback threw and stops the loop; Loop::run*() rethrow it
    // once libuv has returned. Trampolines call this instead of letting C++ unwind libuv.
    // Loop thread only.
    PIPEWORKS_API void report_exception(std::exception_ptr e) noexcept;

    bool in_loop_thread() const noexcept {
        auto r = running.load(std::memory_order_relaxed);
        return r == std::thread::id{} || r == std::this_thread::get_id();
    }

    // For deadlines.cpp.
    void init_deadline_timer() noexcept;
    void start_deadline_timer(std::uint64_t at_ms, std::uint64_t min_delay) noexcept;
    void expire_deadlines() noexcept;
};

// True while the calling thread is inside run*() of any Loop (a borrowed uv_loop_t run by
// uv_run directly is not seen).
PIPEWORKS_API bool running_a_loop() noexcept;

// uv_close with the loop's bookkeeping: Loop's destructor waits for these callbacks.
void close_handle(LoopCore& core, uv_handle_t* h, uv_close_cb cb);
void closed_handle(LoopCore& core) noexcept;

}  // namespace pipeworks::detail
