// SyncEngine: the private loop's thread, started on first use and stopped by its last user.
#include "sync/engine.hpp"

#include "platform/loop_core.hpp"

#include <uv.h>

#include <atomic>
#include <string>

namespace pipeworks::detail {
namespace {

using Clock = std::chrono::steady_clock;

std::mutex engine_mu;
std::weak_ptr<SyncEngine> current_engine;  // guarded by engine_mu
std::atomic<int> engine_threads{0};

uv_handle_t* wake_handle(Loop& loop) {
    return reinterpret_cast<uv_handle_t*>(&loop.core().async);
}

}  // namespace

std::shared_ptr<SyncEngine> SyncEngine::acquire() {
    std::lock_guard lock(engine_mu);
    if (auto e = current_engine.lock()) return e;
    // The engine being destroyed, if any, stops on its own; this one is new.
    auto e = std::make_shared<SyncEngine>();
    e->start();
    current_engine = e;
    return e;
}

bool SyncEngine::running() noexcept {
    return engine_threads.load() > 0;
}

void SyncEngine::start() {
    // Made here and run there: a Loop belongs to the thread that runs it, and between runs any
    // one thread may set it up.
    auto loop = std::make_unique<Loop>();
    // The posted-call handle is unreferenced in every Loop; here it keeps run() going while the
    // engine has users, and the last one unreferences it again.
    uv_ref(wake_handle(*loop));
    loop_ = loop.get();
    engine_threads.fetch_add(1);
    thread_ = std::thread([loop = std::move(loop), posted = stop_posted_]() mutable {
        for (;;) {
            try {
                loop->run();  // returns once unreferenced and every pipe has closed
                break;
            } catch (...) {
                // A posted call threw: the facade's calls catch their own errors, so this is a
                // bug in one of them; the loop goes on serving the others.
            }
        }
        // The stop request can run before its Loop::post has returned (that still signals the
        // loop's wake-up handle): the loop stays until it has.
        (void)posted->wait_until(Clock::now() + std::chrono::seconds(60));
        loop.reset();  // anything still open is closed here, on the loop's own thread
        engine_threads.fetch_sub(1);
    });
}

SyncEngine::~SyncEngine() {
    if (!thread_.joinable()) return;
    Loop* loop = loop_;
    loop->post([loop] { uv_unref(wake_handle(*loop)); });
    bool done = true;
    stop_posted_->set(done);
    if (thread_.get_id() == std::this_thread::get_id()) {
        thread_.detach();  // the loop's own last reference: it finishes by itself
    } else {
        thread_.join();
    }
}

Error refuse_on_loop_thread(const char* what) {
    if (!running_a_loop()) return {};
    return Error(errc::blocking_on_loop_thread,
                 std::string(what) +
                     ": refused on a thread that runs a Loop (blocking there would stall the "
                     "loop; use the callback API, or call from another thread)");
}

Error sync_timeout_error(const char* what, std::chrono::milliseconds timeout) {
    return Error(errc::sync_timeout, std::string(what) + ": not done within " +
                                         std::to_string(timeout.count()) + " ms");
}

}  // namespace pipeworks::detail
