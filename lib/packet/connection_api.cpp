// PacketConnection's public members, PacketRequest and PacketResponder: forwarding to
// PacketConnectionImpl.
#include "packet/connection_impl.hpp"

#include <utility>

namespace pipeworks {

using detail::PacketConnectionImpl;

namespace {

Error check_thread(Loop& loop) {
    if (!loop.core().in_loop_thread())
        return Error(errc::invalid_config,
                     "packet connections must be made on their loop's thread (use Loop::post)");
    return {};
}

}  // namespace

Result<PacketConnectionPtr> PacketConnection::open(const PipePtr& pipe, const PacketConf& conf) {
    if (!pipe) return Error(errc::invalid_config, "PacketConnection::open: the pipe is null");
    if (Error e = conf.validate()) return e;
    if (Error e = check_thread(pipe->loop())) return e;
    auto c = std::make_shared<PacketConnectionImpl>(pipe->loop(), conf);
    if (Error e = c->attach(pipe)) return e;
    return PacketConnectionPtr(c);
}

Result<PacketConnectionPtr> PacketConnection::on_demand(Loop& loop, ConnectFn connect,
                                                        const PacketConf& conf) {
    if (!connect)
        return Error(errc::invalid_config, "PacketConnection::on_demand: no connect function");
    if (Error e = conf.validate()) return e;
    if (Error e = check_thread(loop)) return e;
    auto c = std::make_shared<PacketConnectionImpl>(loop, conf);
    c->connect_ = std::move(connect);
    return PacketConnectionPtr(c);
}

RequestId PacketConnection::submit(std::uint64_t rq_type, std::uint64_t flags,
                                   std::string_view payload, std::uint64_t channel,
                                   PacketCallback done,
                                   std::optional<std::chrono::milliseconds> t) {
    return PacketConnectionImpl::of(*this).submit(rq_type, flags, payload, channel, std::move(done),
                                                  t);
}

bool PacketConnection::cancel(RequestId id) {
    return PacketConnectionImpl::of(*this).cancel(id);
}

void PacketConnection::handle(std::uint64_t rq_type, PacketHandler handler) {
    auto& c = PacketConnectionImpl::of(*this);
    if (handler)
        c.handlers_[rq_type] = std::make_shared<const PacketHandler>(std::move(handler));
    else
        c.handlers_.erase(rq_type);
}

void PacketConnection::end_requests() {
    PacketConnectionImpl::of(*this).end_requests();
}
void PacketConnection::close() {
    PacketConnectionImpl::of(*this).close();
}
void PacketConnection::start() {
    PacketConnectionImpl::of(*this).start();
}
CallbackId PacketConnection::on_end(EndFn fn) {
    return PacketConnectionImpl::of(*this).on_end(std::move(fn));
}
bool PacketConnection::remove(CallbackId id) {
    return PacketConnectionImpl::of(*this).remove(id);
}

bool PacketConnection::ended() const noexcept {
    return PacketConnectionImpl::of(*this).ended_;
}
std::optional<Error> PacketConnection::end_error() const {
    const auto& c = PacketConnectionImpl::of(*this);
    if (!c.ended_) return std::nullopt;
    return c.end_error_.value_or(Error{});
}
bool PacketConnection::requests_ended() const noexcept {
    return PacketConnectionImpl::of(*this).sent_erq_;
}
bool PacketConnection::peer_requests_ended() const noexcept {
    return PacketConnectionImpl::of(*this).peer_erq_;
}
PipePtr PacketConnection::pipe() const {
    return PacketConnectionImpl::of(*this).pipe_;
}
Loop& PacketConnection::loop() const noexcept {
    return *PacketConnectionImpl::of(*this).loop_;
}
const PacketConf& PacketConnection::conf() const noexcept {
    return PacketConnectionImpl::of(*this).conf_;
}
PacketStats PacketConnection::stats() const {
    const auto& c = PacketConnectionImpl::of(*this);
    PacketStats s = c.stats_;
    s.outstanding = c.outgoing_.size() - c.abandoned_;
    s.handlers_in_flight = c.incoming_.size();
    return s;
}

// ---------------------------------------------------------------- requests and responders

PacketResponder PacketRequest::defer() {
    return PacketConnectionImpl::of(*conn_).defer(*this);
}

PacketResponder::PacketResponder(PacketResponder&& other) noexcept
    : conn_(std::move(other.conn_)),
      channel_(other.channel_),
      tag_(other.tag_),
      serial_(other.serial_) {
    other.conn_.reset();
}

PacketResponder& PacketResponder::operator=(PacketResponder&& other) noexcept {
    if (this != &other) {
        if (pending()) fail("the handler never answered");
        conn_ = std::move(other.conn_);
        other.conn_.reset();
        channel_ = other.channel_;
        tag_ = other.tag_;
        serial_ = other.serial_;
    }
    return *this;
}

PacketResponder::~PacketResponder() {
    if (pending()) fail("the handler never answered");
}

bool PacketResponder::answer(HandlerResult result) {
    auto c = conn_.lock();
    conn_.reset();
    if (!c) return false;
    return c->answer_deferred(channel_, tag_, serial_, std::move(result));
}

bool PacketResponder::pending() const noexcept {
    auto c = conn_.lock();
    return c && !c->ended_ && !c->sent_eof_ && c->deferred_pending(channel_, tag_, serial_);
}

}  // namespace pipeworks
