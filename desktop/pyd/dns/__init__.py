"""The host's resolver in the guest (issue 19): the agent answers the guest's A and AAAA
queries through the host OS's own resolver, so the hosts file, a VPN's split DNS and mDNS
behave in containers as on the host.

`wire` (DNS messages, pure), `answer` (a query and a lookup's outcome to a response, pure),
`lookup` (the host's getaddrinfo, its errors read per OS), `service` (the agent's part: a
channel to the guest's relay, guest-image/overlay/usr/lib/pyd/dns-relay).
"""
