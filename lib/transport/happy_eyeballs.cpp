// The connector's attempts on several addresses (Happy Eyeballs, RFC 8305): the families
// interleaved, the preferred first; the next attempt starts 250 ms after the last one, or at
// once when one fails; earlier attempts keep running; the first to connect wins and the
// others are closed. con_timeout bounds the whole, and a failure lists every address's reason.
//
// An attempt is a non-blocking socket of its own watched by a poll handle; the winner's socket
// becomes the pipe's TCP handle (uv_tcp_open), so the rest of the pipe never knows there
// were several.
#include "transport/pipe_impl.hpp"
#include "transport/socket_util.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace pipeworks::detail {

namespace {

constexpr std::chrono::milliseconds kAttemptDelay{250};  // RFC 8305's recommended value

// RFC 8305 section 4: alternate the families, the first address's family first.
std::vector<Address> interleave(const std::vector<Address>& in) {
    std::vector<Address> first, second;
    for (const Address& a : in) {
        bool seen = false;
        for (const auto* list : {&first, &second})
            for (const Address& b : *list) seen = seen || b == a;
        if (seen) continue;
        (first.empty() || a.family() == first.front().family() ? first : second).push_back(a);
    }
    std::vector<Address> out;
    for (std::size_t i = 0; i < first.size() || i < second.size(); ++i) {
        if (i < first.size()) out.push_back(first[i]);
        if (i < second.size()) out.push_back(second[i]);
    }
    return out;
}

}  // namespace

void PipeImpl::begin_attempts(std::vector<Address> addrs, std::string what) {
    attempts_ = std::make_unique<Attempts>();
    attempts_->all = interleave(addrs);
    if (attempts_->all.empty()) {
        fail(EndReason::error,
             Error(errc::invalid_address, "connect to " + what + ": no IPv4 or IPv6 address"));
        return;
    }
    attempts_->what = std::move(what);
    try_addresses();
}

void PipeImpl::try_addresses() {
    Attempts& a = *attempts_;
    ++a.tries;
    a.queue = a.all;
    std::weak_ptr<PipeImpl> weak = self_;
    connect_timer_.cancel();
    connect_timer_ = loop_->call_later(conf_->con_timeout, [weak] {
        auto p = weak.lock();
        if (!p || p->connected_ || !p->attempts_) return;
        std::string tried = p->attempts_->failures;
        for (const auto& r : p->attempts_->running)
            tried += (tried.empty() ? "" : "; ") + r->to.to_string() + ": no answer";
        p->attempts_failed(EndReason::timeout,
                           Error(errc::connect_timeout,
                                 "connect to " + p->attempts_->what + ": no connection within " +
                                     std::to_string(p->conf_->con_timeout.count()) +
                                     " ms (NetConf.con_timeout); tried " + tried));
    });
    start_next_attempt();
}

void PipeImpl::attempts_failed(EndReason reason, Error e) {
    Attempts& a = *attempts_;
    close_attempts();
    if (a.tries > conf_->connect_retries) {
        if (a.tries > 1)
            e.message += " (" + std::to_string(a.tries) + " tries; NetConf.connect_retries)";
        fail(reason, std::move(e));
        return;
    }
    // Another try after the backoff: retry_backoff, doubled each time, at most 30 s.
    connect_timer_.cancel();
    a.failures.clear();
    a.first_error = {};
    auto delay = conf_->retry_backoff;
    for (int i = 1; i < a.tries && delay < std::chrono::seconds(30); ++i) delay *= 2;
    delay = std::min<std::chrono::milliseconds>(delay, std::chrono::seconds(30));
    std::weak_ptr<PipeImpl> weak = self_;
    a.stagger = loop_->call_later(delay, [weak] {
        if (auto p = weak.lock(); p && p->attempts_ && !p->ending() && !p->connected_)
            p->try_addresses();
    });
}

void PipeImpl::start_next_attempt() {
    Attempts& a = *attempts_;
    a.stagger.cancel();
    while (!a.queue.empty() && !ending() && !connected_) {
        Address to = a.queue.front();
        a.queue.erase(a.queue.begin());
        auto r = std::make_unique<Attempts::Running>();
        r->pipe = this;
        r->to = to;
        Error e = bound_socket(SOCK_STREAM, to.family(), Address{}, r->fd);
        int rc = 0;
        if (!e && ::connect(r->fd, to.sockaddr(), to.sockaddr_len()) != 0 && errno != EINPROGRESS)
            rc = os_error();
        if (!e && rc == 0) {
            r->poll = new uv_poll_t;
            rc = uv_poll_init_socket(core_->loop, r->poll, r->fd);
            if (rc != 0) {
                delete r->poll;
                r->poll = nullptr;
            }
        }
        if (e || rc != 0) {
            attempt_failed(*r, e ? e.message : std::string(uv_strerror(rc)),
                           e ? e.code : uv_error_code(rc));
            continue;  // a failure starts the next one at once
        }
        r->poll->data = r.get();
        uv_poll_start(r->poll, UV_WRITABLE, [](uv_poll_t* h, int status, int) {
            auto* run = static_cast<Attempts::Running*>(h->data);
            // libuv reports the socket's POLLERR as UV_EBADF: the real reason is SO_ERROR.
            int so = 0;
            socklen_t len = sizeof so;
            if (::getsockopt(run->fd, SOL_SOCKET, SO_ERROR, &so, &len) != 0) so = errno;
            run->pipe->attempt_finished(run, so != 0 ? -so : status);
        });
        a.running.push_back(std::move(r));
        a.last_start_ms = core_->fresh_now_ms();
        if (!a.queue.empty()) {
            std::weak_ptr<PipeImpl> weak = self_;
            a.stagger = loop_->call_later(kAttemptDelay, [weak] {
                if (auto p = weak.lock(); p && p->attempts_ && !p->connected_)
                    p->start_next_attempt();
            });
        }
        return;
    }
    // A family still being resolved may bring more addresses: wait for them.
    if (a.running.empty() && resolving_ && resolving_->pending > 0) return;
    if (a.running.empty() && !ending() && !connected_) {
        attempts_failed(EndReason::error,
                        Error(a.first_error ? a.first_error : uv_error_code(UV_ECONNREFUSED),
                              "connect to " + a.what + ": every address failed: " + a.failures));
    }
}

void PipeImpl::attempt_failed(Attempts::Running& r, const std::string& why, std::error_code code) {
    Attempts& a = *attempts_;
    if (!a.first_error) a.first_error = code;
    a.failures += (a.failures.empty() ? "" : "; ") + r.to.to_string() + ": " + why;
    close_attempt(r);
}

void PipeImpl::close_attempt(Attempts::Running& r) noexcept {
    if (r.poll != nullptr) {
        r.poll->data = core_;
        close_handle(*core_, reinterpret_cast<uv_handle_t*>(r.poll), [](uv_handle_t* h) {
            closed_handle(*static_cast<LoopCore*>(h->data));
            delete reinterpret_cast<uv_poll_t*>(h);
        });
        r.poll = nullptr;
    }
    // uv_close has taken the descriptor out of the loop's poll set already.
    if (r.fd >= 0) ::close(r.fd);
    r.fd = -1;
}

void PipeImpl::attempt_finished(Attempts::Running* run, int status) {
    Attempts& a = *attempts_;
    auto it = a.running.begin();
    while (it != a.running.end() && it->get() != run) ++it;
    if (it == a.running.end()) return;
    std::unique_ptr<Attempts::Running> r = std::move(*it);
    a.running.erase(it);
    if (status != 0) {
        attempt_failed(*r, std::string(uv_strerror(status)) + " (" + uv_err_name(status) + ")",
                       uv_error_code(status));
        start_next_attempt();
        return;
    }
    // The winner: the others go, its socket becomes the pipe's.
    a.stagger.cancel();
    for (auto& other : a.running) close_attempt(*other);
    a.running.clear();
    const int fd = r->fd;
    r->fd = -1;
    close_attempt(*r);
    if (int rc = uv_tcp_open(&h_.tcp, fd); rc != 0) {
        ::close(fd);
        fail(EndReason::error, uv_fail("uv_tcp_open", rc, r->to));
        return;
    }
    if (!conf_->do_close) kept_fd_ = ::dup(fd);
    set_stream_options(&h_.tcp);
    peer_ = r->to;
    attempts_.reset();
    on_connected(0);
}

void PipeImpl::add_attempt_addresses(const std::vector<Address>& more) {
    Attempts& a = *attempts_;
    std::vector<Address> queue = a.queue;
    queue.insert(queue.end(), more.begin(), more.end());
    a.queue = interleave(queue);
    std::vector<Address> all = a.all;
    all.insert(all.end(), more.begin(), more.end());
    a.all = interleave(all);
    if (a.running.empty()) {
        start_next_attempt();
    } else if (!a.stagger.active()) {
        // The next attempt is due 250 ms after the last one started.
        const std::uint64_t since = core_->fresh_now_ms() - a.last_start_ms;
        const auto wait = since >= static_cast<std::uint64_t>(kAttemptDelay.count())
                              ? std::chrono::milliseconds(0)
                              : kAttemptDelay - std::chrono::milliseconds(since);
        std::weak_ptr<PipeImpl> weak = self_;
        a.stagger = loop_->call_later(wait, [weak] {
            if (auto p = weak.lock(); p && p->attempts_ && !p->connected_) p->start_next_attempt();
        });
    }
}

void PipeImpl::close_attempts() noexcept {
    if (!attempts_) return;
    attempts_->stagger.cancel();
    for (auto& r : attempts_->running) close_attempt(*r);
    attempts_->running.clear();
    attempts_->queue.clear();
}

}  // namespace pipeworks::detail
