#include "broker.hpp"

#include <algorithm>

using namespace pipeworks;

namespace pubsub {

namespace {

constexpr std::string_view kSub = "SUB ";
constexpr std::string_view kPub = "PUB ";

// Topics are printable ASCII without spaces, so they read the same in a log and a shell.
bool valid_topic_bytes(std::string_view topic) {
    return std::all_of(topic.begin(), topic.end(), [](char c) { return c > ' ' && c < 0x7f; });
}

}  // namespace

Error BrokerConfig::validate() const {
    auto bad = [](const char* field, const char* why) {
        return Error(errc::invalid_config, std::string("BrokerConfig.") + field + ": " + why);
    };
    if (bind.empty()) return bad("bind", "an address is needed");
    if (max_clients == 0) return bad("max_clients", "must be > 0");
    if (max_topics == 0) return bad("max_topics", "must be > 0");
    if (max_topic_length == 0) return bad("max_topic_length", "must be > 0");
    // A command must fit in a message.
    if (max_message < kSub.size() + max_topic_length)
        return bad("max_message", "must hold \"SUB \" and the longest topic");
    if (low_watermark > high_watermark) return bad("low_watermark", "must be <= high_watermark");
    if (command_timeout.count() <= 0) return bad("command_timeout", "must be > 0");
    if (slow_grace.count() < 0) return bad("slow_grace", "must be >= 0");
    return {};
}

Broker::Broker(Loop& loop, BrokerConfig config) : loop_(loop), config_(std::move(config)) {}

Broker::~Broker() {
    // The pipes' callbacks hold weak references: none of them reaches this object any more.
    for (auto& [pipe, client] : clients_) {
        client.command_timer.cancel();
        client.slow_timer.cancel();
        client.pipe->close();
    }
    if (listener_) listener_->close();
}

Result<std::shared_ptr<Broker>> Broker::start(Loop& loop, BrokerConfig config) {
    if (Error e = config.validate()) return e;
    std::shared_ptr<Broker> b(new Broker(loop, std::move(config)));
    NetConf conf;
    conf.reuse_addr = true;
    conf.framer = Framer::message();
    conf.framer.max_message = b->config_.max_message;
    conf.high_watermark = b->config_.high_watermark;
    conf.low_watermark = b->config_.low_watermark;
    auto listener = Pipe::listen(loop, b->config_.bind, conf);
    if (!listener) return listener.error();
    b->listener_ = *listener;
    std::weak_ptr<Broker> weak = b;
    b->listener_->on_accept([weak](Pipe&, const PipePtr& pipe) {
        if (auto self = weak.lock()) self->accept(pipe);
    });
    return b;
}

Address Broker::local_address() const {
    return listener_ ? listener_->local_address() : Address{};
}

void Broker::close() {
    if (listener_) listener_->close();  // a server closes the pipes it accepted, too
}

std::size_t Broker::subscribers(std::string_view topic) const {
    auto it = topics_.find(topic);
    return it == topics_.end() ? 0 : it->second.subscribers.size();
}

std::size_t Broker::publishers(std::string_view topic) const {
    auto it = topics_.find(topic);
    return it == topics_.end() ? 0 : it->second.publishers.size();
}

void Broker::accept(const PipePtr& pipe) {
    ++counters_.accepted;
    std::weak_ptr<Broker> weak = weak_from_this();
    // The end callback is added first, so even a refused client leaves the table.
    pipe->on_end([weak](Pipe& p, const EndInfo&) {
        if (auto self = weak.lock()) self->leave(p);
    });
    pipe->on_message([weak](Pipe& p, const Message& m) {
        auto self = weak.lock();
        if (!self) return;
        auto it = self->clients_.find(&p);
        if (it == self->clients_.end()) return;
        const Client& c = it->second;
        // A publisher's message has already gone down its links; what is left is the check
        // for slow subscribers. A subscriber has nothing to say: its messages are ignored.
        if (c.role == Role::pending)
            self->on_command(p, m.data);
        else if (c.role == Role::publisher && self->config_.drop_slow)
            self->check_slow(c.topic);
    });
    Client& c = clients_[pipe.get()];
    c.pipe = pipe;
    if (clients_.size() > config_.max_clients) {
        refuse(*pipe, "too many clients");
        return;
    }
    Pipe* raw = pipe.get();
    c.command_timer = loop_.call_later(config_.command_timeout, [weak, raw] {
        auto self = weak.lock();
        if (!self) return;
        auto it = self->clients_.find(raw);
        if (it != self->clients_.end() && it->second.role == Role::pending)
            self->refuse(*raw, "no command in time");
    });
}

void Broker::on_command(Pipe& pipe, std::string_view command) {
    Client& c = clients_.at(&pipe);
    c.command_timer.cancel();
    Role role;
    if (command.starts_with(kSub))
        role = Role::subscriber;
    else if (command.starts_with(kPub))
        role = Role::publisher;
    else
        return refuse(pipe, "expected \"SUB <topic>\" or \"PUB <topic>\"");
    std::string_view topic = command.substr(kSub.size());
    if (topic.empty() || topic.size() > config_.max_topic_length || !valid_topic_bytes(topic))
        return refuse(pipe, "a topic is 1 to " + std::to_string(config_.max_topic_length) +
                                " printable characters without spaces");
    if (!topics_.contains(topic) && topics_.size() >= config_.max_topics)
        return refuse(pipe, "too many topics");
    join(c, role, std::string(topic));
}

void Broker::join(Client& client, Role role, std::string topic) {
    // "OK" goes first: a subscriber's first message is the answer, whatever is published next.
    if (Error e = client.pipe->send("OK")) return log("send OK: " + e.message);
    Topic& t = topics_[topic];
    client.role = role;
    client.topic = std::move(topic);
    // Only open pipes are in the tables (each leaves in its end callback), so a link can only
    // be refused for a pipe already closing; the broker's tables catch up when it ends.
    if (role == Role::subscriber) {
        t.subscribers.push_back(client.pipe);
        if (config_.drop_slow) {
            std::weak_ptr<Broker> weak = weak_from_this();
            client.pipe->on_drain([weak](Pipe& p) {
                if (auto self = weak.lock())
                    if (auto it = self->clients_.find(&p); it != self->clients_.end())
                        it->second.slow_timer.cancel();
            });
        }
        for (const PipePtr& pub : t.publishers)
            (void)pub->link(client.pipe);  // refused only for an ended pipe
    } else {
        t.publishers.push_back(client.pipe);
        for (const PipePtr& sub : t.subscribers) (void)client.pipe->link(sub);
    }
}

void Broker::check_slow(const std::string& topic) {
    auto it = topics_.find(topic);
    if (it == topics_.end()) return;
    std::weak_ptr<Broker> weak = weak_from_this();
    for (const PipePtr& s : it->second.subscribers) {
        if (s->writable()) continue;
        Client& c = clients_.at(s.get());
        if (c.slow_timer.active()) continue;
        // The subscriber's drain callback cancels this if it catches up in time.
        Pipe* raw = s.get();
        c.slow_timer = loop_.call_later(config_.slow_grace, [weak, raw] {
            if (auto self = weak.lock()) self->drop_if_slow(*raw);
        });
    }
}

void Broker::drop_if_slow(Pipe& pipe) {
    auto it = clients_.find(&pipe);
    if (it == clients_.end() || it->second.role != Role::subscriber) return;
    ++counters_.dropped_slow;
    log("dropped slow subscriber " + pipe.peer_address().to_string() + " of " + it->second.topic +
        " (" + std::to_string(pipe.write_queue_bytes()) + " bytes queued)");
    // Out of the topic now, out of the client table when its end callback runs. Closing
    // unlinks it from every publisher at once (so they read again) and gives what it already
    // has queued NetConf::con_timeout to go out.
    detach(it->second);
    pipe.close();
}

void Broker::refuse(Pipe& pipe, const std::string& why) {
    ++counters_.refused;
    log("refused " + pipe.peer_address().to_string() + ": " + why);
    if (auto it = clients_.find(&pipe); it != clients_.end()) it->second.command_timer.cancel();
    (void)pipe.send("ERR " + why);  // the pipe closes next anyway
    pipe.close();                   // after the answer has gone out
}

void Broker::detach(Client& c) {
    if (c.role == Role::pending) return;
    if (auto t = topics_.find(c.topic); t != topics_.end()) {
        auto& list = c.role == Role::subscriber ? t->second.subscribers : t->second.publishers;
        std::erase(list, c.pipe);
        if (t->second.subscribers.empty() && t->second.publishers.empty()) topics_.erase(t);
    }
    c.role = Role::pending;
    c.topic.clear();
}

void Broker::leave(Pipe& pipe) {
    auto it = clients_.find(&pipe);
    if (it == clients_.end()) return;
    it->second.command_timer.cancel();
    it->second.slow_timer.cancel();
    detach(it->second);
    clients_.erase(it);
}

void Broker::log(const std::string& line) const {
    if (on_log_) on_log_(line);
}

}  // namespace pubsub
