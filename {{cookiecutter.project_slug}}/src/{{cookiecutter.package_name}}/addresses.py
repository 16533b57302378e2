"""Which addresses an outgoing call may reach: public ones, and private ones only for hosts the
operator allowed (WEBHOOK_ALLOWED_HOSTS); cloud metadata services and the unspecified address
never. An IPv6 address that carries an IPv4 one (IPv4-mapped or -compatible, NAT64, 6to4,
Teredo) is judged by the IPv4 addresses it leads to, the same on every Python version.
"""

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Cloud metadata services (AWS, GCP and Azure; AWS over IPv6; ECS tasks; Alibaba) hand out the
# machine's credentials. They are refused even for a host in WEBHOOK_ALLOWED_HOSTS: allowing a
# host is for reaching a private service, never a credentials endpoint.
METADATA = frozenset(
    ipaddress.ip_address(address)
    for address in ("169.254.169.254", "fd00:ec2::254", "169.254.170.2", "100.100.100.200")
)
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052: the IPv4 address in the last 32 bits
NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215: a network's own translators


def refusal(ip: IPAddress, allowed: bool) -> str | None:
    """Why a call may not go to `ip`, or None; `allowed`: its host is in WEBHOOK_ALLOWED_HOSTS."""
    leads_to = [ip, *carried(ip)]
    via = "" if len(leads_to) == 1 else f" (it leads to {', '.join(map(str, leads_to[1:]))})"
    if any(address in METADATA for address in leads_to):
        return f"a cloud metadata address{via}, which is never called"
    if any(address.is_unspecified for address in leads_to):
        return f"the unspecified address{via}, which reaches this machine"
    if allowed:
        return None
    judged = leads_to[1:] or leads_to  # a wrapper is judged by where it leads, the same everywhere
    if ip in NAT64_LOCAL or not all(a.is_global and not a.is_multicast for a in judged):
        return (
            f"which is not a public address{via}; "
            "list the host in WEBHOOK_ALLOWED_HOSTS to allow it"
        )
    return None


def carried(ip: IPAddress) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address leads to: IPv4-mapped, NAT64 (RFC 6052), 6to4, Teredo
    (its server and client), IPv4-compatible (deprecated: `::a.b.c.d`)."""
    if isinstance(ip, ipaddress.IPv4Address):
        return []
    if ip.ipv4_mapped is not None:
        return [ip.ipv4_mapped]
    if ip in NAT64:
        return [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)]
    if ip.sixtofour is not None:
        return [ip.sixtofour]
    if ip.teredo is not None:
        return list(ip.teredo)
    if int(ip) >> 32 == 0 and int(ip) > 1:  # not :: nor ::1, which are judged as they are
        return [ipaddress.IPv4Address(int(ip))]
    return []
