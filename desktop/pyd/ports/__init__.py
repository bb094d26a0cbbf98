"""Published container ports on the host.

`forwards` turns the Docker Engine's view of published ports (and the user's manual forwards)
into `Forward` values and says which listeners to open and close (pure); `manager` keeps those
listeners in step with it in the agent, `container_watch` follows the engine's events, and
`listener` is one host TCP port relayed to the guest over SSH. `udp_listener` is one host UDP
port, its datagrams framed (`udp_frames`) on an exec channel to the guest's udp-relay, one
flow per host peer (`udp_flows`).
"""
