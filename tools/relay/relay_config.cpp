#include "relay_config.hpp"

#include <charconv>
#include <cmath>
#include <limits>
#include <optional>
#include <vector>

namespace pipeworks::relay {

namespace {

Error bad(std::string message) {
    return Error(errc::invalid_config, std::move(message));
}

// The TLS options as given, applied once both endpoints are known.
struct TlsFlags {
    std::optional<std::string> cert, key, ca, verify_host;
    std::optional<std::vector<std::string>> alpn;
    bool insecure = false, require_client_cert = false;
};

Result<std::vector<std::string>> parse_alpn(std::string_view text) {
    std::vector<std::string> out;
    while (true) {
        const auto comma = text.find(',');
        const std::string_view name = text.substr(0, comma);
        if (name.empty() || name.size() > 255)
            return bad(
                "--alpn: expected protocol names separated by commas (1 to 255 bytes "
                "each, e.g. h2,http/1.1), got \"" +
                std::string(text) + "\"");
        out.emplace_back(name);
        if (comma == std::string_view::npos) return out;
        text = text.substr(comma + 1);
    }
}

// Refuses a flag the schemes give no use, then fills the TlsConf of each tls:// side.
Error apply_tls(const TlsFlags& f, RelayConfig& c) {
    const bool tls_listen = c.listen.scheme == Scheme::tls;
    const bool tls_target = c.target.scheme == Scheme::tls;
    auto only_listen = [&](const char* flag) {
        return bad(std::string(flag) + " applies to a tls:// LISTEN, and LISTEN is \"" +
                   c.listen.text + "\"");
    };
    auto only_target = [&](const char* flag) {
        return bad(std::string(flag) + " applies to a tls:// TARGET, and TARGET is \"" +
                   c.target.text + "\"");
    };
    if (f.cert && !tls_listen) return only_listen("--cert");
    if (f.key && !tls_listen) return only_listen("--key");
    if (f.require_client_cert && !tls_listen) return only_listen("--require-client-cert");
    if (f.verify_host && !tls_target) return only_target("--verify-host");
    if (f.insecure && !tls_target) return only_target("--insecure");
    if (f.alpn && !tls_listen && !tls_target)
        return bad("--alpn applies to a tls:// side, and neither LISTEN nor TARGET is one");
    if (f.insecure && f.verify_host)
        return bad("--verify-host: --insecure checks no name; give one or the other");
    const bool ca_for_clients = tls_listen && f.require_client_cert;
    if (f.ca && !ca_for_clients && !(tls_target && !f.insecure))
        return bad(f.insecure && tls_target
                       ? "--ca: --insecure verifies nothing; give one or the other"
                       : "--ca applies to a tls:// TARGET, or to a tls:// LISTEN with "
                         "--require-client-cert");
    if (tls_listen) {
        c.listen_tls.cert_file = f.cert.value_or("");
        c.listen_tls.key_file = f.key.value_or("");
        c.listen_tls.require_client_cert = f.require_client_cert;
        if (ca_for_clients) c.listen_tls.ca_file = f.ca.value_or("");
        if (f.alpn) c.listen_tls.alpn = *f.alpn;
    }
    if (tls_target) {
        c.target_tls.ca_file = f.ca.value_or("");
        c.target_tls.server_name = f.verify_host.value_or("");
        c.target_tls.insecure_skip_verify = f.insecure;
        if (f.alpn) c.target_tls.alpn = *f.alpn;
    }
    return {};
}

}  // namespace

const char* to_string(Scheme s) noexcept {
    switch (s) {
        case Scheme::udp:
            return "udp";
        case Scheme::tls:
            return "tls";
        case Scheme::tcp:
            break;
    }
    return "tcp";
}

std::string Endpoint::host_port() const {
    if (!by_name()) return address.to_string();
    return (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" +
           std::to_string(port);
}

Result<Endpoint> parse_endpoint(std::string_view text, Resolve resolve) {
    const auto sep = text.find("://");
    if (sep == std::string_view::npos)
        return Error(errc::invalid_address,
                     "\"" + std::string(text) +
                         "\": expected tcp://HOST:PORT, tls://HOST:PORT or udp://HOST:PORT");
    const std::string_view scheme = text.substr(0, sep);
    const std::string_view rest = text.substr(sep + 3);
    Endpoint ep;
    ep.text = std::string(text);
    if (scheme == "tcp") {
        ep.scheme = Scheme::tcp;
    } else if (scheme == "udp") {
        ep.scheme = Scheme::udp;
    } else if (scheme == "tls") {
        ep.scheme = Scheme::tls;
    } else {
        return Error(errc::invalid_address, "\"" + ep.text + "\": unknown scheme \"" +
                                                std::string(scheme) +
                                                "\" (use tcp://, tls:// or udp://)");
    }
    auto hp = split_host_port(rest);
    if (!hp) return Error(errc::invalid_address, "\"" + ep.text + "\": " + hp.error().message);
    ep.host = hp->first;
    ep.port = hp->second;
    if (auto numeric = Address::ip(hp->first, hp->second)) {
        ep.address = *numeric;
        return ep;
    }
    if (resolve == Resolve::later) {
        if (ep.host.empty())
            return Error(errc::invalid_address, "\"" + ep.text + "\": the host is empty");
        return ep;
    }
    auto addr = resolve_blocking(rest);
    if (!addr) return Error(errc::invalid_address, "\"" + ep.text + "\": " + addr.error().message);
    ep.address = *addr;
    return ep;
}

Error parse_dns_servers(std::string_view text, std::vector<Address>& out) {
    while (true) {
        const auto comma = text.find(',');
        const std::string_view one = text.substr(0, comma);
        // A bare IPv6 address has colons of its own: it is tried whole first.
        std::optional<Address> a;
        if (auto bare = Address::ip(one, 53)) a = *bare;
        if (!a) {
            if (auto hp = split_host_port(one); hp && hp->second != 0) {
                if (auto ip = Address::ip(hp->first, hp->second)) a = *ip;
            }
        }
        if (!a)
            return bad(
                "--dns: expected SERVER[:PORT] (an IP address, [v6]:PORT with a port, "
                "PORT 1-65535; several separated by commas), got \"" +
                std::string(one) + "\"");
        out.push_back(*a);
        if (comma == std::string_view::npos) return {};
        text = text.substr(comma + 1);
    }
}

Error RelayConfig::validate() const {
    const bool tcp_listen = is_stream(listen.scheme);
    const bool tcp_target = is_stream(target.scheme);
    if (tcp_listen != tcp_target && framing == Framing::raw)
        return bad(std::string("relaying ") + to_string(listen.scheme) + " to " +
                   to_string(target.scheme) +
                   " needs --framing length on the TCP side (raw TCP has no message boundaries "
                   "to turn into datagrams)");
    if (!tcp_listen && !tcp_target && framing != Framing::raw)
        return bad("--framing length applies to TCP sides; udp to udp has none");
    if (target.port_number() == 0) return bad("the target \"" + target.text + "\" needs a port");
    if (!dns_servers.empty() && !target.by_name())
        return bad("--dns applies to a TARGET given by name, and TARGET is \"" + target.text +
                   "\"");
    if (!target.by_name() && target.address.is_any())
        return bad("the target \"" + target.text + "\" is an any-address; give a host");
    if (connect_timeout.count() <= 0) return bad("--connect-timeout: must be > 0");
    if (idle_timeout && idle_timeout->count() == 0 && (!tcp_listen || !tcp_target))
        return bad("--idle-timeout: must be > 0 when a side is UDP (a UDP flow has no other end)");
    if (idle_timeout && idle_timeout->count() < 0) return bad("--idle-timeout: must be >= 0");
    if (frame_timeout && framing == Framing::raw)
        return bad("--frame-timeout applies to --framing length (raw TCP has no messages)");
    if (frame_timeout && frame_timeout->count() < 0) return bad("--frame-timeout: must be >= 0");
    if (listen.scheme == Scheme::tls) {
        if (listen_tls.cert_file.empty() && listen_tls.cert_pem.empty())
            return bad("the tls:// LISTEN \"" + listen.text +
                       "\" needs --cert FILE (the relay's certificate chain, PEM)");
        if (listen_tls.key_file.empty() && listen_tls.key_pem.empty())
            return bad("the tls:// LISTEN \"" + listen.text +
                       "\" needs --key FILE (the private key of --cert, PEM)");
    }
    return {};
}

Result<std::chrono::milliseconds> parse_seconds(std::string_view option, std::string_view text) {
    double v = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc{} || end != text.data() + text.size() || !std::isfinite(v) || v < 0 ||
        v > 1e9)
        return bad(std::string(option) + ": expected seconds (e.g. 5 or 0.5), got \"" +
                   std::string(text) + "\"");
    const auto ms = static_cast<std::int64_t>(std::llround(v * 1000));
    // A positive value that rounds to 0 ms must not turn into "never".
    return std::chrono::milliseconds(v > 0 && ms == 0 ? 1 : ms);
}

Result<CommandLine> parse_command_line(std::span<const char* const> args) {
    CommandLine cl;
    TlsFlags tls;
    std::vector<std::string_view> positional;
    for (std::size_t i = 0; i < args.size(); ++i) {
        const std::string_view a = args[i];
        if (a == "--help" || a == "-h") {
            cl.help = true;
            return cl;
        }
        if (a == "--version") {
            cl.version = true;
            return cl;
        }
    }
    for (std::size_t i = 0; i < args.size(); ++i) {
        std::string_view a = args[i];
        // "--opt=value" and "--opt value" both work.
        std::string_view inline_value;
        bool has_inline = false;
        if (a.starts_with("--")) {
            if (auto eq = a.find('='); eq != std::string_view::npos) {
                inline_value = a.substr(eq + 1);
                a = a.substr(0, eq);
                has_inline = true;
            }
        }
        auto value = [&]() -> Result<std::string_view> {
            if (has_inline) return inline_value;
            if (i + 1 >= args.size()) return bad(std::string(a) + ": needs a value");
            return std::string_view(args[++i]);
        };
        auto flag = [&](bool& out) -> Error {
            if (has_inline) return bad(std::string(a) + ": takes no value");
            out = true;
            return {};
        };
        Error e;
        if (a == "--stats") {
            e = flag(cl.stats);
        } else if (a == "--quiet" || a == "-q") {
            e = flag(cl.quiet);
        } else if (a == "--framing") {
            auto v = value();
            if (!v) return v.error();
            if (*v == "raw")
                cl.relay.framing = Framing::raw;
            else if (*v == "length")
                cl.relay.framing = Framing::length;
            else
                return bad("--framing: expected raw or length, got \"" + std::string(*v) + "\"");
        } else if (a == "--max-conns") {
            auto v = value();
            if (!v) return v.error();
            std::size_t n = 0;
            auto [end, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
            if (ec != std::errc{} || end != v->data() + v->size() || n == 0)
                return bad("--max-conns: expected a positive integer, got \"" + std::string(*v) +
                           "\"");
            cl.relay.max_conns = n;
        } else if (a == "--idle-timeout" || a == "--frame-timeout" || a == "--connect-timeout" ||
                   a == "--grace") {
            auto v = value();
            if (!v) return v.error();
            auto ms = parse_seconds(a, *v);
            if (!ms) return ms.error();
            if (a == "--idle-timeout")
                cl.relay.idle_timeout = *ms;
            else if (a == "--frame-timeout")
                cl.relay.frame_timeout = *ms;
            else if (a == "--connect-timeout")
                cl.relay.connect_timeout = *ms;
            else
                cl.grace = *ms;
        } else if (a == "--cert" || a == "--key" || a == "--ca" || a == "--verify-host") {
            auto v = value();
            if (!v) return v.error();
            if (v->empty()) return bad(std::string(a) + ": needs a value");
            std::optional<std::string>& out = a == "--cert"  ? tls.cert
                                              : a == "--key" ? tls.key
                                              : a == "--ca"  ? tls.ca
                                                             : tls.verify_host;
            out = std::string(*v);
        } else if (a == "--alpn") {
            auto v = value();
            if (!v) return v.error();
            auto names = parse_alpn(*v);
            if (!names) return names.error();
            tls.alpn = std::move(*names);
        } else if (a == "--dns") {
            auto v = value();
            if (!v) return v.error();
            if (auto e = parse_dns_servers(*v, cl.relay.dns_servers)) return e;
        } else if (a == "--insecure") {
            e = flag(tls.insecure);
        } else if (a == "--require-client-cert") {
            e = flag(tls.require_client_cert);
        } else if (a.starts_with("-") && a.size() > 1) {
            return bad("unknown option \"" + std::string(args[i]) + "\"");
        } else {
            positional.push_back(a);
        }
        if (e) return e;
    }
    if (positional.size() != 2)
        return bad("expected LISTEN and TARGET, got " + std::to_string(positional.size()) +
                   " argument(s)");
    auto listen = parse_endpoint(positional[0]);
    if (!listen) return Error(listen.error().code, "LISTEN " + listen.error().message);
    auto target = parse_endpoint(positional[1], Resolve::later);
    if (!target) return Error(target.error().code, "TARGET " + target.error().message);
    cl.relay.listen = std::move(*listen);
    cl.relay.target = std::move(*target);
    if (auto e = apply_tls(tls, cl.relay)) return e;
    if (auto e = cl.relay.validate()) return e;
    return cl;
}

}  // namespace pipeworks::relay
