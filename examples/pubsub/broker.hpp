// Broker: a publish/subscribe broker built from pipes and links. Clients speak length-framed
// TCP (Framer::message(): a 4-byte big-endian length, then the bytes). A client's first
// message is its command:
//
//   "SUB <topic>"   every message later published on <topic> is sent to this client
//   "PUB <topic>"   every message this client sends from now on is published on <topic>
//
// The broker answers "OK" (the client is in), or "ERR <why>" and closes that client (an
// unknown command, a bad topic, a limit reached). After "OK" a subscriber only receives; a
// publisher only sends (what a subscriber sends is ignored, and so are publications on a topic
// nobody subscribes to).
//
// The fan-out is the library's: a publisher's pipe is linked (Pipe::link, one direction) to
// the pipe of every subscriber of its topic, current and future, so each message is forwarded
// without passing through the broker's code, with the link's backpressure. A subscriber whose
// queued bytes pass the high watermark stops its publishers from reading, so a slow subscriber
// slows its topic down (nothing is lost, memory stays bounded). With drop_slow, a subscriber
// that stays above its low watermark for slow_grace after passing the high one is closed
// instead, and the others go on at full speed (a burst a subscriber drains in time is no
// reason to drop it). Links vanish with the pipe that ends; the broker's topic tables follow
// through each client's end callback.
//
// Threading: bound to its Loop's thread; every member and callback runs there.
// Lifetime: shared-owned (start() returns a shared_ptr). Dropping the last reference closes
// the listening pipe and every client without running the broker's callbacks.
#pragma once

#include <pipeworks/loop.hpp>
#include <pipeworks/pipe.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace pubsub {

struct BrokerConfig {
    pipeworks::Address bind = pipeworks::Address::loopback(pipeworks::Family::ipv4);
    std::size_t max_clients = 1024;        // connections at once; more get "ERR" and are closed
    std::size_t max_topics = 1024;         // topics with a client at once
    std::size_t max_topic_length = 256;    // bytes of a topic name
    std::size_t max_message = 1 << 20;     // bytes of one message (a larger frame ends its client)
    std::size_t high_watermark = 1 << 20;  // queued bytes at which a subscriber is "slow"
    std::size_t low_watermark = 256 << 10;
    bool drop_slow = false;  // close a slow subscriber instead of slowing its publishers
    // drop_slow: how long a subscriber may stay full (above low_watermark after passing
    // high_watermark) before it is closed; its publishers wait meanwhile.
    std::chrono::milliseconds slow_grace{1000};
    // A client that sends no command in this time gets "ERR" and is closed.
    std::chrono::milliseconds command_timeout{10000};

    // An empty Error when usable, otherwise one naming the field.
    pipeworks::Error validate() const;
};

// Totals since start.
struct BrokerCounters {
    std::uint64_t accepted = 0;      // connections accepted
    std::uint64_t refused = 0;       // clients closed with "ERR" (bad command, limits, timeout)
    std::uint64_t dropped_slow = 0;  // subscribers closed by drop_slow
};

class Broker : public std::enable_shared_from_this<Broker> {
public:
    using LogFn = std::function<void(const std::string&)>;

    // Validates `config` and listens on config.bind. Errors: the config's, or the bind's.
    static pipeworks::Result<std::shared_ptr<Broker>> start(pipeworks::Loop& loop,
                                                            BrokerConfig config);
    ~Broker();

    Broker(const Broker&) = delete;
    Broker& operator=(const Broker&) = delete;

    // The address actually listened on (the OS's port when 0 was asked).
    pipeworks::Address local_address() const;
    const BrokerConfig& config() const noexcept { return config_; }

    // One line per event worth telling the operator (a refused client, a dropped subscriber).
    void on_log(LogFn fn) { on_log_ = std::move(fn); }

    // Closes the listening pipe and every client (what was queued still goes out); the loop
    // then runs out of work. Idempotent.
    void close();

    std::size_t clients() const noexcept { return clients_.size(); }
    std::size_t topics() const noexcept { return topics_.size(); }
    std::size_t subscribers(std::string_view topic) const;
    std::size_t publishers(std::string_view topic) const;
    BrokerCounters counters() const noexcept { return counters_; }

private:
    enum class Role : std::uint8_t { pending, subscriber, publisher };
    struct Client {
        pipeworks::PipePtr pipe;
        Role role = Role::pending;
        std::string topic;
        pipeworks::Timer command_timer;
        pipeworks::Timer slow_timer;  // drop_slow: running while this subscriber is full
    };
    struct Topic {
        std::vector<pipeworks::PipePtr> subscribers, publishers;
    };

    Broker(pipeworks::Loop& loop, BrokerConfig config);
    void accept(const pipeworks::PipePtr& pipe);
    void on_command(pipeworks::Pipe& pipe, std::string_view command);
    void join(Client& client, Role role, std::string topic);
    void check_slow(const std::string& topic);
    void drop_if_slow(pipeworks::Pipe& pipe);
    void refuse(pipeworks::Pipe& pipe, const std::string& why);
    void detach(Client& client);  // out of its topic; the client stays until its pipe ends
    void leave(pipeworks::Pipe& pipe);
    void log(const std::string& line) const;

    pipeworks::Loop& loop_;
    BrokerConfig config_;
    pipeworks::PipePtr listener_;
    std::unordered_map<pipeworks::Pipe*, Client> clients_;
    std::map<std::string, Topic, std::less<>> topics_;
    BrokerCounters counters_;
    LogFn on_log_;
};

}  // namespace pubsub
