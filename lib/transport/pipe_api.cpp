// Pipe's public members: opening, and forwarding to PipeImpl.
#include "transport/pipe_impl.hpp"
#include "transport/tls_filter.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>

namespace pipeworks {

const char* to_string(PipeKind k) noexcept {
    switch (k) {
        case PipeKind::tcp_client:
            return "tcp client";
        case PipeKind::tcp_server:
            return "tcp server";
        case PipeKind::tcp_accepted:
            return "tcp accepted";
        case PipeKind::udp:
            return "udp";
    }
    return "?";
}

const char* to_string(EndReason r) noexcept {
    switch (r) {
        case EndReason::local_close:
            return "local close";
        case EndReason::peer_close:
            return "peer close";
        case EndReason::peer_reset:
            return "peer reset";
        case EndReason::error:
            return "error";
        case EndReason::timeout:
            return "timeout";
        case EndReason::framing_error:
            return "framing error";
    }
    return "?";
}

bool Pattern::matches(std::string_view message) const noexcept {
    if (bytes.empty()) return true;
    if (anchored) return message.substr(0, bytes.size()) == bytes;
    return message.find(bytes) != std::string_view::npos;
}

using detail::PipeImpl;

namespace {

PipeImpl& I(Pipe* p) {
    return PipeImpl::of(*p);
}
const PipeImpl& I(const Pipe* p) {
    return PipeImpl::of(*p);
}

std::shared_ptr<PipeImpl> make(Loop& loop, PipeKind kind, const NetConf& conf) {
    auto p = std::make_shared<PipeImpl>(loop, kind, conf);
    p->self_ = p;
    loop.core().add(p.get());
    return p;
}

void init_tcp(PipeImpl& p) {
    uv_tcp_init(p.core_->loop, &p.h_.tcp);
    p.h_.handle.data = &p;
    p.handle_inited_ = true;
}

// The pipe failed to open: close its handle quietly and hand back the error.
Error abandon(const std::shared_ptr<PipeImpl>& p, Error e) {
    p->shutdown_silently();
    return e;
}

// The same for a socket pipeworks made: the duplicate do_close = false keeps is ours too, as
// the caller never saw the pipe.
Error abandon_own(const std::shared_ptr<PipeImpl>& p, Error e) {
    p->discard_kept_fd();
    return abandon(p, std::move(e));
}

Error check_loop(const NetConf& conf, Loop& loop) {
    if (conf.loop != nullptr && conf.loop != &loop)
        return Error(errc::invalid_config,
                     "NetConf.loop: differs from the loop the pipe is being opened on");
    if (!loop.core().in_loop_thread())
        return Error(errc::invalid_config,
                     "pipes must be opened on their loop's thread (use Loop::post)");
    return {};
}

Error no_loop(const char* op) {
    return Error(errc::invalid_config, std::string(op) + ": NetConf.loop is null; pass a Loop");
}

}  // namespace

Result<PipePtr> Pipe::connect(Loop& loop, const Address& to, const NetConf& conf,
                              const Address& local) {
    if (auto e = conf.validate(Transport::tcp)) return e;
    if (auto e = check_loop(conf, loop)) return e;
    if (to.empty() || to.port() == 0 || to.is_any())
        return Error(errc::invalid_address,
                     "connect: destination \"" + to.to_string() + "\" needs an IP and a port");
    if (!local.empty() && local.family() != to.family())
        return Error(errc::invalid_address, "connect to " + to.to_string() + ": local address " +
                                                local.to_string() + " is of another family");
    auto p = make(loop, PipeKind::tcp_client, conf);
    init_tcp(*p);
    if (conf.use_ssl)
        if (auto e = p->prepare_tls(detail::TlsRole::client, {})) return abandon(p, std::move(e));
    if (conf.connect_retries > 0 && !local.empty())
        return abandon(p, Error(errc::not_supported_yet,
                                "connect: NetConf.connect_retries together with a local address "
                                "is not supported yet"));
    if (conf.connect_retries > 0) {
        // Retries make a new socket each time: the connector's attempts do.
        p->begin_attempts({to}, to.to_string());
        return PipePtr(p);
    }
    if (auto e = p->open_tcp_socket(local, to.family(), false)) return abandon_own(p, e);
    if (auto e = p->start_connect(to)) return abandon_own(p, e);
    return PipePtr(p);
}

Result<PipePtr> Pipe::connect(Loop& loop, std::string_view host_port, const NetConf& conf,
                              const Address& local) {
    auto hp = split_host_port(host_port);
    if (!hp) return hp.error();
    if (auto numeric = Address::ip(hp->first, hp->second))
        return connect(loop, *numeric, conf, local);
    if (auto e = conf.validate(Transport::tcp)) return e;
    if (auto e = check_loop(conf, loop)) return e;
    if (hp->second == 0)
        return Error(errc::invalid_address,
                     "connect: \"" + std::string(host_port) + "\" has port 0");
    if (!local.empty())
        return Error(errc::not_supported_yet,
                     "connect: a local address with a name to resolve is not supported yet");
    auto p = make(loop, PipeKind::tcp_client, conf);
    init_tcp(*p);
    if (conf.use_ssl)
        if (auto e = p->prepare_tls(detail::TlsRole::client, hp->first))
            return abandon(p, std::move(e));
    p->start_resolve(hp->first, hp->second, conf.family_policy);
    return PipePtr(p);
}

Result<PipePtr> Pipe::connect_any(Loop& loop, const std::vector<Address>& candidates,
                                  const NetConf& conf) {
    if (auto e = conf.validate(Transport::tcp)) return e;
    if (auto e = check_loop(conf, loop)) return e;
    if (candidates.empty())
        return Error(errc::invalid_address, "connect_any: no candidate address given");
    for (const Address& a : candidates)
        if (a.empty() || a.port() == 0 || a.is_any())
            return Error(errc::invalid_address,
                         "connect_any: candidate \"" + a.to_string() + "\" needs an IP and a port");
    auto p = make(loop, PipeKind::tcp_client, conf);
    init_tcp(*p);
    if (conf.use_ssl)
        if (auto e = p->prepare_tls(detail::TlsRole::client, {})) return abandon(p, std::move(e));
    std::string what = candidates.size() == 1 ? candidates[0].to_string()
                                              : std::to_string(candidates.size()) + " addresses";
    p->begin_attempts(candidates, std::move(what));
    return PipePtr(p);
}

Result<PipePtr> Pipe::listen(Loop& loop, const Address& local, const NetConf& conf) {
    if (auto e = conf.validate(Transport::tcp)) return e;
    if (auto e = check_loop(conf, loop)) return e;
    if (local.empty())
        return Error(errc::invalid_address, "listen: an address to listen on is required");
    auto p = make(loop, PipeKind::tcp_server, conf);
    init_tcp(*p);
    if (conf.use_ssl)
        if (auto e = p->prepare_tls(detail::TlsRole::server, {})) return abandon(p, std::move(e));
    if (auto e = p->open_tcp_socket(local, local.family(), true)) return abandon_own(p, e);
    if (auto e = p->start_listen()) return abandon_own(p, e);
    return PipePtr(p);
}

Result<PipePtr> Pipe::udp(Loop& loop, const Address& local, const Address& dest,
                          const NetConf& conf) {
    if (auto e = conf.validate(Transport::udp)) return e;
    if (auto e = check_loop(conf, loop)) return e;
    if (local.empty() && dest.empty())
        return Error(errc::invalid_address, "udp: give a local address, a destination, or both");
    if (!dest.empty() && (dest.port() == 0))
        return Error(errc::invalid_address,
                     "udp: destination \"" + dest.to_string() + "\" needs a port");
    auto p = make(loop, PipeKind::udp, conf);
    uv_udp_init_ex(p->core_->loop, &p->h_.udp, AF_UNSPEC | UV_UDP_RECVMMSG);
    p->h_.handle.data = p.get();
    p->handle_inited_ = true;
    if (auto e = p->open_udp(local, dest)) return abandon_own(p, e);
    return PipePtr(p);
}

Result<PipePtr> Pipe::udp(Loop& loop, std::string_view host_port, const NetConf& conf,
                          const Address& local) {
    auto hp = split_host_port(host_port);
    if (!hp) return Error(hp.error().code, "udp: " + hp.error().message);
    if (auto numeric = Address::ip(hp->first, hp->second)) return udp(loop, local, *numeric, conf);
    if (auto e = conf.validate(Transport::udp)) return e;
    if (auto e = check_loop(conf, loop)) return e;
    if (hp->second == 0)
        return Error(errc::invalid_address,
                     "udp: destination \"" + std::string(host_port) + "\" has port 0");
    // A local address fixes the family: only its addresses can be the destination.
    FamilyPolicy policy = conf.family_policy;
    if (!local.empty()) {
        const bool v4 = local.family() == Family::ipv4;
        if ((v4 && policy == FamilyPolicy::ipv6_only) || (!v4 && policy == FamilyPolicy::ipv4_only))
            return Error(errc::invalid_config, "udp to " + std::string(host_port) +
                                                   ": local address " + local.to_string() +
                                                   " is of a family NetConf.family_policy (" +
                                                   (v4 ? "ipv6_only" : "ipv4_only") + ") excludes");
        policy = v4 ? FamilyPolicy::ipv4_only : FamilyPolicy::ipv6_only;
    }
    auto p = make(loop, PipeKind::udp, conf);
    uv_udp_init_ex(p->core_->loop, &p->h_.udp, AF_UNSPEC | UV_UDP_RECVMMSG);
    p->h_.handle.data = p.get();
    p->handle_inited_ = true;
    p->udp_local_ = local;
    p->start_resolve(hp->first, hp->second, policy);
    return PipePtr(p);
}

Result<PipePtr> Pipe::adopt(Loop& loop, int fd, const NetConf& conf) {
    if (fd < 0)
        return Error(errc::invalid_config, "adopt: fd " + std::to_string(fd) + " is not valid");
    // Refusals come before libuv takes the fd, so a refused fd stays open for the caller
    // (and no handle is closed before it was ever initialised).
    if (auto e = check_loop(conf, loop)) return e;
    int type = 0;
    socklen_t type_len = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &type_len) == 0)
        if (auto e = conf.validate(type == SOCK_DGRAM ? Transport::udp : Transport::tcp)) return e;
    if (conf.use_ssl)
        return Error(errc::not_supported_yet,
                     "adopt: NetConf.use_ssl on an adopted socket is not supported yet");
    auto p = make(loop, PipeKind::tcp_client, conf);
    if (auto e = p->adopt_fd(fd)) {
        if (!p->handle_inited_) {
            // No handle was made: nothing for libuv to close.
            loop.core().remove(p.get());
            p->self_.reset();
            return e;
        }
        return abandon(p, e);
    }
    if (auto e = conf.validate(p->transport())) return abandon(p, e);
    return PipePtr(p);
}

Result<PipePtr> Pipe::connect(const Address& to, const NetConf& conf) {
    if (!conf.loop) return no_loop("connect");
    return connect(*conf.loop, to, conf);
}

Result<PipePtr> Pipe::listen(const Address& local, const NetConf& conf) {
    if (!conf.loop) return no_loop("listen");
    return listen(*conf.loop, local, conf);
}

Result<PipePtr> Pipe::udp(const Address& local, const Address& dest, const NetConf& conf) {
    if (!conf.loop) return no_loop("udp");
    return udp(*conf.loop, local, dest, conf);
}

// ---- callbacks

CallbackId Pipe::on_message(MessageFn fn) {
    auto id = I(this).next_id_++;
    I(this).message_cbs_.add(id, std::move(fn));
    return id;
}
CallbackId Pipe::on_up(UpFn fn) {
    auto id = I(this).next_id_++;
    I(this).up_cbs_.add(id, std::move(fn));
    return id;
}
CallbackId Pipe::on_end(EndFn fn) {
    auto id = I(this).next_id_++;
    I(this).end_cbs_.add(id, std::move(fn));
    return id;
}
CallbackId Pipe::on_drain(DrainFn fn) {
    auto id = I(this).next_id_++;
    I(this).drain_cbs_.add(id, std::move(fn));
    return id;
}
CallbackId Pipe::on_accept(AcceptFn fn) {
    auto id = I(this).next_id_++;
    I(this).accept_cbs_.add(id, std::move(fn));
    return id;
}
CallbackId Pipe::on_eof(EofFn fn) {
    auto id = I(this).next_id_++;
    I(this).eof_cbs_.add(id, std::move(fn));
    return id;
}
CallbackId Pipe::on_error(ErrorFn fn) {
    auto id = I(this).next_id_++;
    I(this).error_cbs_.add(id, std::move(fn));
    return id;
}
bool Pipe::remove(CallbackId id) {
    auto& p = I(this);
    return p.message_cbs_.remove(id) || p.up_cbs_.remove(id) || p.end_cbs_.remove(id) ||
           p.drain_cbs_.remove(id) || p.accept_cbs_.remove(id) || p.eof_cbs_.remove(id) ||
           p.error_cbs_.remove(id);
}

// ---- sending

Error Pipe::send(std::string_view bytes) {
    return I(this).send_bytes(bytes);
}

Error Pipe::send(std::span<const std::byte> bytes) {
    return I(this).send_bytes(
        std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

Error Pipe::send_to(std::string_view bytes, const Address& to) {
    return I(this).send_datagram(bytes, to);
}

Error Pipe::send_raw(std::string_view bytes) {
    return I(this).send_unframed(bytes);
}

Error Pipe::send_json(std::string_view content, std::string_view content_type,
                      std::string_view content_encoding) {
    return I(this).send_json(content, content_type, content_encoding);
}

Error Pipe::set_framer(const Framer& framer) {
    auto& p = I(this);
    if (p.ending() || p.ended())
        return Error(errc::pipe_ended, "set_framer on " + p.describe() + ": the pipe has ended");
    if (Error e = framer.validate(transport()))
        return Error(e.code, "set_framer on " + p.describe() + ": " + e.message);
    p.edit_conf().framer = framer;
    if (p.kind_ == PipeKind::tcp_server) return {};  // for the pipes it accepts from now on
    if (p.feeding_) {
        // Inside a message callback: the decoder stops after this message, then switches.
        p.framer_switch_ = true;
        return {};
    }
    p.switch_decoder();
    p.schedule_kept();
    return {};
}

const Framer& Pipe::framer() const noexcept {
    return I(this).conf_->framer;
}

std::size_t Pipe::write_queue_bytes() const noexcept {
    return I(this).queued_bytes();
}

bool Pipe::writable() const noexcept {
    return write_queue_bytes() < I(this).conf_->high_watermark;
}

// ---- queues

SubId Pipe::subscribe(Pattern pattern, const Address& from, MessageFn handler) {
    auto& p = I(this);
    auto s = std::make_unique<detail::Subscription>();
    s->id = p.next_sub_++;
    s->pattern = std::move(pattern);
    s->from = from;
    s->handler = std::move(handler);
    p.subs_.push_back(std::move(s));
    return p.subs_.back()->id;
}

bool Pipe::unsubscribe(SubId sub) {
    auto& p = I(this);
    if (sub == all_messages) p.implicit_sub_ = false;
    auto it = std::find_if(p.subs_.begin(), p.subs_.end(),
                           [&](auto& s) { return s->id == sub && !s->removed; });
    if (it == p.subs_.end()) return sub == all_messages;
    detail::Subscription* s = it->get();
    s->removed = true;
    p.subs_removed_ = true;
    s->queue.clear();
    s->bytes = 0;
    auto waiters = std::move(s->waiters);
    s->waiters.clear();
    if (p.dispatch_depth_ == 0) p.erase_removed_subs();
    for (auto& w : waiters) {
        w.timer.cancel();
        RecvResult r;
        r.status = RecvResult::Status::ended;
        r.end = EndInfo{EndReason::local_close,
                        Error(errc::pipe_ended, "recv: the subscription was removed")};
        p.call_recv(w.fn, r);
    }
    return true;
}

void Pipe::recv(SubId sub, std::optional<std::chrono::milliseconds> timeout, RecvFn fn) {
    I(this).recv(sub, timeout, std::move(fn));
}

namespace {

// One send_recv(): what to send again and how many more times.
struct Exchange {
    std::string bytes;
    Address to;
    SubId sub;
    std::optional<std::chrono::milliseconds> timeout;
    Pipe::RecvFn fn;
    int resends_left;
};

Error send_request(Pipe& pipe, std::string_view bytes, const Address& to) {
    return to.empty() ? pipe.send(bytes) : pipe.send_to(bytes, to);
}

void await_reply(Pipe& pipe, std::shared_ptr<Exchange> x) {
    pipe.recv(x->sub, x->timeout, [x](Pipe& p, RecvResult& r) mutable {
        if (r.status != RecvResult::Status::timeout || x->resends_left == 0) return x->fn(p, r);
        --x->resends_left;
        if (Error e = send_request(p, x->bytes, x->to)) {
            RecvResult refused;
            refused.status = RecvResult::Status::ended;
            refused.end = EndInfo{EndReason::local_close, std::move(e)};
            return x->fn(p, refused);
        }
        await_reply(p, std::move(x));
    });
}

}  // namespace

Error Pipe::send_recv(std::string_view bytes, SubId sub,
                      std::optional<std::chrono::milliseconds> timeout, RecvFn fn,
                      const Address& to) {
    auto& p = I(this);
    // Checked before sending: a request whose reply can never be received is a mistake.
    if ((sub == all_messages ? p.implicit_sub() : p.find_sub(sub)) == nullptr)
        return Error(errc::invalid_config, "send_recv: no subscription " + std::to_string(sub));
    if (Error e = send_request(*this, bytes, to)) return e;
    const int resends = p.transport() == Transport::udp ? p.conf_->send_retry : 0;
    if (resends == 0) {
        recv(sub, timeout, std::move(fn));
        return {};
    }
    await_reply(*this, std::make_shared<Exchange>(
                           Exchange{std::string(bytes), to, sub, timeout, std::move(fn), resends}));
    return {};
}

std::optional<Received> Pipe::try_recv(SubId sub) {
    return I(this).try_recv(sub);
}

std::size_t Pipe::queued(SubId sub) const noexcept {
    auto& p = const_cast<PipeImpl&>(I(this));
    auto* s = p.find_sub(sub);
    return s ? s->queue.size() : 0;
}

// ---- servers

void Pipe::accept(std::optional<std::chrono::milliseconds> timeout, AcceptResultFn fn) {
    auto& p = I(this);
    // Never inside this call (see recv()).
    p.core_->defer([pp = std::static_pointer_cast<PipeImpl>(shared_from_this()), timeout,
                    fn = std::move(fn)]() mutable {
        AcceptResult r;
        if (pp->kind_ != PipeKind::tcp_server) {
            r.status = RecvResult::Status::ended;
            r.end = EndInfo{
                EndReason::error,
                Error(errc::wrong_pipe_kind, "accept on " + pp->describe() + ": not a server")};
        } else if (auto next = pp->try_accept()) {
            r.status = RecvResult::Status::message;
            r.pipe = *next;
        } else if (pp->ending()) {
            r.status = RecvResult::Status::ended;
            r.end = pp->end_info_;
        } else {
            pp->wait_for_accept(timeout, std::move(fn));
            return;
        }
        pp->guarded("accept", [&] { fn(*pp, r); });
    });
}

std::optional<PipePtr> Pipe::try_accept() {
    return I(this).try_accept();
}

std::vector<PipePtr> Pipe::clients() const {
    std::vector<PipePtr> out;
    for (auto* c = I(this).first_client_; c; c = c->client_next_)
        if (c->self_) out.push_back(c->self_);
    return out;
}

// ---- control

// ---- linking

Error Pipe::link(const PipePtr& target) {
    auto& p = I(this);
    if (!target) return Error(errc::invalid_config, "link on " + p.describe() + ": no target pipe");
    auto& t = I(target.get());
    auto refuse = [&](errc code, const std::string& why) {
        return Error(code, "link " + p.describe() + " to " + t.describe() + ": " + why);
    };
    if (&t == &p) return refuse(errc::invalid_config, "a pipe cannot be linked to itself");
    if (p.ending() || p.ended() || t.ending() || t.ended())
        return refuse(errc::pipe_ended, "the pipe has ended");
    if (p.kind_ == PipeKind::tcp_server || t.kind_ == PipeKind::tcp_server)
        return refuse(errc::wrong_pipe_kind,
                      "a server carries no messages; link its accepted pipes");
    if (p.loop_ != t.loop_) return refuse(errc::invalid_config, "the pipes run on different loops");
    if (t.kind_ == PipeKind::udp && t.peer_.empty() && !t.udp_resolving())
        return refuse(errc::not_connected,
                      "the UDP target has no destination (open it with one, or use send_to())");
    if (p.kind_ != PipeKind::udp && t.kind_ == PipeKind::udp && !p.framed_)
        return refuse(errc::invalid_config,
                      "a TCP pipe linked to a UDP pipe needs a framer (NetConf.framer): each "
                      "message becomes one datagram");
    if (p.kind_ == PipeKind::udp && t.kind_ != PipeKind::udp && !t.framed_)
        return refuse(errc::invalid_config,
                      "a UDP pipe linked to a TCP pipe needs a framer on the TCP pipe "
                      "(NetConf.framer): each datagram is sent as one message");
    if (p.linked_to(&t)) return {};
    p.links_.push_back(&t);
    t.feeders_.push_back(&p);
    if (t.throttling_)
        p.block_flow();
    else if (t.above_high_)
        t.set_throttle(true);
    return {};
}

bool Pipe::unlink(const PipePtr& target) {
    auto& p = I(this);
    if (!target) return false;
    auto& t = I(target.get());
    if (!p.linked_to(&t)) return false;
    std::erase(p.links_, &t);
    std::erase(t.feeders_, &p);
    if (t.throttling_) {
        if (t.feeders_.empty()) t.throttling_ = false;
        p.unblock_flow();
    }
    return true;
}

Error Pipe::relay(const PipePtr& a, const PipePtr& b) {
    if (!a || !b) return Error(errc::invalid_config, "relay: both pipes are needed");
    const bool had = I(a.get()).linked_to(&I(b.get()));
    if (Error e = a->link(b)) return e;
    if (Error e = b->link(a)) {
        if (!had) a->unlink(b);
        return e;
    }
    return {};
}

std::vector<PipePtr> Pipe::links() const {
    std::vector<PipePtr> out;
    for (auto* t : I(this).links_) out.push_back(t->shared_from_this());
    return out;
}

void Pipe::close(ClosedFn done) {
    auto& p = I(this);
    if (p.ended()) {
        if (done) done(*this);
        return;
    }
    if (done) p.closed_fns_.push_back(std::move(done));
    p.end(EndReason::local_close, {}, detail::Drain::graceful);
}

Error Pipe::shutdown() {
    return I(this).request_shutdown();
}

void Pipe::pause() {
    auto& p = I(this);
    p.paused_ = true;
    p.stop_reading();
    p.watch_accepts();
}

void Pipe::resume() {
    auto& p = I(this);
    if (!p.paused_) return;
    p.paused_ = false;
    p.watch_accepts();
    p.start_reading();
    p.schedule_kept();  // kept messages, then a FIN that came while paused
}

bool Pipe::paused() const noexcept {
    return I(this).paused_;
}

// ---- state

PipeKind Pipe::kind() const noexcept {
    return I(this).kind_;
}
Transport Pipe::transport() const noexcept {
    return I(this).kind_ == PipeKind::udp ? Transport::udp : Transport::tcp;
}
bool Pipe::is_up() const noexcept {
    const auto& p = I(this);
    return p.connected_ && !p.ending() && (!p.tls_ || p.tls_->established || !p.tls_->filter);
}
bool Pipe::socket_connected() const noexcept {
    const auto& p = I(this);
    if (p.kind_ == PipeKind::udp || p.kind_ == PipeKind::tcp_server || !p.handle_inited_ ||
        p.closing() || !p.connected_)
        return false;
    uv_os_fd_t fd;
    if (uv_fileno(&p.h_.handle, &fd) != 0) return false;
    tcp_info info{};
    socklen_t len = sizeof info;
    return ::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) == 0 &&
           info.tcpi_state == TCP_ESTABLISHED;
}
TlsInfo Pipe::tls_info() const {
    return I(this).tls_info_impl();
}
bool Pipe::ending() const noexcept {
    return I(this).ending() && !I(this).ended();
}
bool Pipe::peer_finished() const noexcept {
    return I(this).read_eof_;
}
bool Pipe::write_shut() const noexcept {
    return I(this).shut_requested_;
}
bool Pipe::ended() const noexcept {
    return I(this).ended();
}
std::optional<EndInfo> Pipe::end_info() const {
    if (!I(this).ending()) return std::nullopt;
    return I(this).end_info_;
}
Address Pipe::local_address() const {
    return I(this).local_;
}
Address Pipe::peer_address() const {
    return I(this).peer_;
}
const NetConf& Pipe::conf() const noexcept {
    return *I(this).conf_;
}
Loop& Pipe::loop() const noexcept {
    return *I(this).loop_;
}

int Pipe::native_handle() const noexcept {
    auto& p = I(this);
    if (p.kept_fd_ >= 0) return p.kept_fd_;
    if (!p.handle_inited_ || p.closing()) return -1;
    uv_os_fd_t fd;
    if (uv_fileno(&p.h_.handle, &fd) != 0) return -1;
    return fd;
}

PipeStats Pipe::stats() const {
    auto& p = I(this);
    auto now = uv_now(p.core_->loop);
    PipeStats s;
    s.bytes_in = p.bytes_in_;
    s.bytes_out = p.bytes_out_;
    s.msgs_in = p.msgs_in_;
    s.msgs_out = p.msgs_out_;
    s.dropped = p.dropped_;
    s.rate_in = p.rate_in_.rate(now, p.opened_ms_);
    s.rate_out = p.rate_out_.rate(now, p.opened_ms_);
    s.window = std::chrono::milliseconds(
        std::min<std::uint64_t>(detail::RateWindow::kBuckets * 1000ull, now - p.opened_ms_));
    return s;
}

}  // namespace pipeworks
