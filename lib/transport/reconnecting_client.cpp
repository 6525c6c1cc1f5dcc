// ReconnectingClient: a new connection (a Pipe of its own) after each loss or failed connect,
// the pause doubling from min_delay to max_delay, the callbacks given to every connection.
#include <pipeworks/loop.hpp>
#include <pipeworks/reconnecting_client.hpp>

#include <algorithm>
#include <utility>
#include <vector>

namespace pipeworks {

namespace {

template <class Fn>
using Fns = std::vector<std::pair<CallbackId, Fn>>;

template <class Fn>
bool erase_id(Fns<Fn>& fns, CallbackId id) {
    auto it = std::find_if(fns.begin(), fns.end(), [id](const auto& e) { return e.first == id; });
    if (it == fns.end()) return false;
    fns.erase(it);
    return true;
}

// Calls every callback of a copy of `fns`: one may add or remove callbacks while it runs.
template <class Fn, class... Args>
void call_all(const Fns<Fn>& fns, Args&... args) {
    const Fns<Fn> now = fns;
    for (const auto& [id, fn] : now) fn(args...);
}

}  // namespace

struct ReconnectingClient::Impl {
    Loop* loop = nullptr;
    Address to;
    std::string host_port;  // non-empty: resolved again for every attempt
    NetConf conf;
    ReconnectConf reconnect;

    PipePtr pipe;  // the current connection
    bool up = false;
    bool closing = false;  // close() was called
    bool ended = false;
    int failed = 0;  // connects that failed in a row
    int pauses = 0;  // retries since the last connection was up: the backoff's exponent
    int connections = 0;
    Timer retry;

    CallbackId next_id = 1;
    Fns<MessageFn> message_fns;
    // The current connection's tokens for the message callbacks given to it.
    std::vector<std::pair<CallbackId, CallbackId>> pipe_message_ids;
    Fns<UpFn> up_fns;
    Fns<EndFn> down_fns;
    Fns<RetryFn> retry_fns;
    Fns<ClientEndFn> end_fns;

    std::string what() const { return host_port.empty() ? to.to_string() : host_port; }
    Result<PipePtr> connect_once() const {
        return host_port.empty() ? Pipe::connect(*loop, to, conf)
                                 : Pipe::connect(*loop, host_port, conf);
    }
    void attempt(ReconnectingClient& c);
    void adopt(ReconnectingClient& c, PipePtr p);
    void lost(ReconnectingClient& c, const EndInfo& e);
    void finish(ReconnectingClient& c, EndInfo e);
    // Runs the client's own callbacks (down, retry): one that throws ends the client, and the
    // exception goes on to Loop::run().
    template <class F>
    void guarded(ReconnectingClient& c, const char* what, F&& f) {
        try {
            f();
        } catch (...) {
            finish(c, EndInfo{EndReason::error,
                              Error(errc::callback_threw, std::string("the ") + what +
                                                              " callback of the reconnecting "
                                                              "client to " +
                                                              this->what() + " threw")});
            throw;
        }
    }

    template <class Fn>
    CallbackId add(Fns<Fn>& fns, Fn fn) {
        const CallbackId id = next_id++;
        if (!ended) fns.emplace_back(id, std::move(fn));
        return id;
    }
    // Either `to` or `host_port` (non-empty) is the destination.
    static Result<ReconnectingClientPtr> open(Loop& loop, const Address& to,
                                              std::string_view host_port, const NetConf& conf,
                                              const ReconnectConf& reconnect);
};

void ReconnectingClient::Impl::attempt(ReconnectingClient& c) {
    if (ended || closing) return;
    auto p = connect_once();
    if (!p) {
        // Refused at once (out of descriptors, say): a failed connect like any other.
        lost(c, EndInfo{EndReason::error, p.error()});
        return;
    }
    adopt(c, *p);
}

void ReconnectingClient::Impl::adopt(ReconnectingClient& c, PipePtr p) {
    pipe = std::move(p);
    // The client lives while a connection's callbacks hold it (or a retry's timer does);
    // a pipe drops its callbacks when it ends, so the reference goes with it.
    auto keep = c.shared_from_this();
    pipe->on_up([keep](Pipe& p) {
        Impl& s = *keep->impl_;
        if (s.ended || &p != s.pipe.get()) return;
        s.up = true;
        s.failed = 0;
        s.pauses = 0;
        ++s.connections;
        call_all(s.up_fns, p);
    });
    pipe_message_ids.clear();
    for (const auto& [id, fn] : message_fns)
        pipe_message_ids.emplace_back(id, pipe->on_message(fn));
    pipe->on_end([keep](Pipe& p, const EndInfo& e) {
        Impl& s = *keep->impl_;
        if (&p != s.pipe.get()) return;
        s.lost(*keep, e);
    });
}

void ReconnectingClient::Impl::lost(ReconnectingClient& c, const EndInfo& e) {
    const bool was_up = up;
    up = false;
    PipePtr gone = std::move(pipe);
    pipe_message_ids.clear();
    if (was_up && gone) guarded(c, "down", [&] { call_all(down_fns, *gone, e); });
    if (ended) return;
    if (closing) {
        finish(c, EndInfo{EndReason::local_close, {}});
        return;
    }
    // Closed through connection()->close(), or a callback of ours threw: not a loss to mend.
    if (e.reason == EndReason::local_close || e.error == errc::callback_threw) {
        finish(c, e);
        return;
    }
    if (!was_up) ++failed;
    if (!was_up && reconnect.max_attempts > 0 && failed >= reconnect.max_attempts) {
        EndInfo out = e;
        out.error = Error(e.error.code,
                          "reconnect to " + what() + ": gave up after " + std::to_string(failed) +
                              " failed connects in a row (ReconnectConf.max_attempts); "
                              "the last: " +
                              (e.error ? e.error.message : to_string(e.reason)));
        finish(c, std::move(out));
        return;
    }
    auto delay = reconnect.min_delay;
    for (int i = 0; i < pauses && delay < reconnect.max_delay; ++i) delay *= 2;
    delay = std::min(delay, reconnect.max_delay);
    int retry_no = ++pauses;
    guarded(c, "retry", [&] { call_all(retry_fns, c, retry_no, delay, e); });
    if (ended || closing) {
        if (!ended) finish(c, EndInfo{EndReason::local_close, {}});
        return;
    }
    std::shared_ptr<ReconnectingClient> keep = c.shared_from_this();
    retry = loop->call_later(delay, [keep] { keep->impl_->attempt(*keep); });
}

void ReconnectingClient::Impl::finish(ReconnectingClient& c, EndInfo e) {
    if (ended) return;
    ended = true;
    retry.cancel();
    call_all(end_fns, c, e);
    // Callbacks often capture the client: dropping them breaks the cycles.
    message_fns.clear();
    up_fns.clear();
    down_fns.clear();
    retry_fns.clear();
    end_fns.clear();
}

ReconnectingClient::ReconnectingClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ReconnectingClient::~ReconnectingClient() = default;

namespace {

Error check(const ReconnectConf& r) {
    if (r.min_delay.count() <= 0)
        return Error(errc::invalid_config, "ReconnectConf.min_delay: must be > 0");
    if (r.max_delay < r.min_delay)
        return Error(errc::invalid_config, "ReconnectConf.max_delay: must be >= min_delay (" +
                                               std::to_string(r.min_delay.count()) + " ms)");
    if (r.max_attempts < 0)
        return Error(errc::invalid_config,
                     "ReconnectConf.max_attempts: must be >= 0 (0: no limit)");
    return {};
}

}  // namespace

Result<ReconnectingClientPtr> ReconnectingClient::Impl::open(Loop& loop, const Address& to,
                                                             std::string_view host_port,
                                                             const NetConf& conf,
                                                             const ReconnectConf& reconnect) {
    if (Error e = check(reconnect)) return e;
    auto impl = std::make_unique<Impl>();
    impl->loop = &loop;
    impl->to = to;
    impl->host_port = std::string(host_port);
    impl->conf = conf;
    impl->reconnect = reconnect;
    // The first connect's refusals (a bad address or conf) are the caller's to see.
    auto first = impl->connect_once();
    if (!first) return first.error();
    ReconnectingClientPtr c(new ReconnectingClient(std::move(impl)));
    c->impl_->adopt(*c, *first);
    return c;
}

Result<ReconnectingClientPtr> ReconnectingClient::open(Loop& loop, const Address& to,
                                                       const NetConf& conf,
                                                       const ReconnectConf& reconnect) {
    return Impl::open(loop, to, {}, conf, reconnect);
}

Result<ReconnectingClientPtr> ReconnectingClient::open(Loop& loop, std::string_view host_port,
                                                       const NetConf& conf,
                                                       const ReconnectConf& reconnect) {
    return Impl::open(loop, {}, host_port, conf, reconnect);
}

CallbackId ReconnectingClient::on_message(MessageFn fn) {
    Impl& s = *impl_;
    if (s.pipe && !s.ended) {
        const CallbackId id = s.add(s.message_fns, fn);
        s.pipe_message_ids.emplace_back(id, s.pipe->on_message(std::move(fn)));
        return id;
    }
    return s.add(s.message_fns, std::move(fn));
}

CallbackId ReconnectingClient::on_up(UpFn fn) {
    return impl_->add(impl_->up_fns, std::move(fn));
}

CallbackId ReconnectingClient::on_down(EndFn fn) {
    return impl_->add(impl_->down_fns, std::move(fn));
}

CallbackId ReconnectingClient::on_retry(RetryFn fn) {
    return impl_->add(impl_->retry_fns, std::move(fn));
}

CallbackId ReconnectingClient::on_end(ClientEndFn fn) {
    return impl_->add(impl_->end_fns, std::move(fn));
}

bool ReconnectingClient::remove(CallbackId id) {
    Impl& s = *impl_;
    if (erase_id(s.message_fns, id)) {
        for (auto it = s.pipe_message_ids.begin(); it != s.pipe_message_ids.end(); ++it)
            if (it->first == id) {
                if (s.pipe) s.pipe->remove(it->second);
                s.pipe_message_ids.erase(it);
                break;
            }
        return true;
    }
    return erase_id(s.up_fns, id) || erase_id(s.down_fns, id) || erase_id(s.retry_fns, id) ||
           erase_id(s.end_fns, id);
}

Error ReconnectingClient::send(std::string_view bytes) {
    Impl& s = *impl_;
    if (s.ended)
        return Error(errc::pipe_ended,
                     "send on the reconnecting client to " + s.what() + ": it has ended");
    if (!s.up || !s.pipe)
        return Error(errc::not_connected,
                     "send on the reconnecting client to " + s.what() +
                         ": no connection is up (connecting, or waiting to try again); nothing "
                         "is kept for the next one");
    return s.pipe->send(bytes);
}

void ReconnectingClient::close() {
    Impl& s = *impl_;
    if (s.ended || s.closing) return;
    s.closing = true;
    s.retry.cancel();
    if (s.pipe) {
        s.pipe->close();  // its end finishes the client
        return;
    }
    // Waiting to try again: the end comes on a later iteration, never inside close().
    auto keep = shared_from_this();
    s.retry = s.loop->call_later(std::chrono::milliseconds(0), [keep] {
        keep->impl_->finish(*keep, EndInfo{EndReason::local_close, {}});
    });
}

PipePtr ReconnectingClient::connection() const {
    return impl_->pipe;
}

bool ReconnectingClient::is_up() const noexcept {
    return impl_->up && impl_->pipe && impl_->pipe->is_up();
}

bool ReconnectingClient::ended() const noexcept {
    return impl_->ended;
}

int ReconnectingClient::failed_attempts() const noexcept {
    return impl_->failed;
}

int ReconnectingClient::connections() const noexcept {
    return impl_->connections;
}

}  // namespace pipeworks
