// TLS settings and what a pipe reports about its TLS session (docs/tls.md).
// Plain values; TlsConf is checked when a TLS pipe opens.
#pragma once

#include <pipeworks/export.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace pipeworks {

// The TLS half of NetConf (NetConf::tls), used when NetConf::use_ssl is set. Secure by default:
// a client verifies the server's chain against the system's trust store and checks its name.
struct TlsConf {
    // This side's certificate chain and private key, PEM: a server needs them; a client sends
    // them when the server asks for a client certificate. A file, or the PEM text itself.
    std::string cert_file, key_file;
    std::string cert_pem, key_pem;
    // Whom to trust. All empty: the system's store (OpenSSL's default paths). Otherwise only
    // these: a PEM bundle file, a hashed directory (c_rehash), PEM text.
    std::string ca_file, ca_dir, ca_pem;
    // Clients: the name the server's certificate must carry, sent as SNI unless it is an IP
    // address. Empty: the host of the "host:port" given to connect(), or the address connected.
    std::string server_name;
    // ALPN protocols in order of preference ("h2", "http/1.1"). A server picks the first of its
    // list the client offers; none in common fails the handshake (no_application_protocol).
    std::vector<std::string> alpn;
    // Servers: ask every client for a certificate and refuse one without a valid chain.
    bool require_client_cert = false;
    // Clients: reuse the session of an earlier connection to the same name and port
    // (TLS 1.3 tickets, TLS 1.2 tickets/IDs). Servers: issue tickets.
    bool session_resumption = true;
    // Lowest protocol version accepted: 0x0303 (TLS 1.2) or 0x0304 (TLS 1.3).
    std::uint16_t min_version = 0x0303;
    // DANGER: true accepts any certificate from anyone, including an attacker in the middle.
    // For tests against self-signed peers only; a client pipe so configured says so in
    // Pipe::tls_info().verified == false.
    bool insecure_skip_verify = false;
};

// A pipe's TLS session, once the handshake is done (Pipe::tls_info()).
struct TlsInfo {
    bool enabled = false;      // the pipe runs TLS
    bool established = false;  // the handshake completed
    bool resumed = false;      // the session was resumed from an earlier one
    bool verified = false;     // the peer's certificate chain (and name) were checked and valid
    std::string version;       // "TLSv1.3"
    std::string cipher;        // "TLS_AES_256_GCM_SHA384"
    std::string alpn;          // the negotiated ALPN protocol; empty: none
    std::string peer_subject;  // the peer certificate's subject (one line); empty: none sent
};

}  // namespace pipeworks
