/* rawsyn IFACE DST_IP DST_PORT: sends one TCP SYN from IFACE's address as a raw Ethernet
 * frame (AF_PACKET, what CAP_NET_RAW allows a container's root), past the kernel's own TCP
 * stack and IP-layer netfilter: twice with skb->protocol claiming ARP (so rules that trust
 * it would not look at the frame as IPv4), once with the queueing layer bypassed
 * (PACKET_QDISC_BYPASS). Prints "sent N" with the number of frames the kernel took.
 * Built static by tests/e2e/test_host_access.py to run in a FROM-scratch image. */
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

static uint16_t csum(const uint8_t *p, size_t n, uint32_t sum) {
  for (; n > 1; p += 2, n -= 2) sum += (uint32_t)(p[0] << 8 | p[1]);
  if (n) sum += (uint32_t)(p[0] << 8);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return (uint16_t)~sum;
}

int main(int argc, char **argv) {
  if (argc != 4) return fprintf(stderr, "usage: rawsyn IFACE DST_IP DST_PORT\n"), 2;
  struct ifreq ifr = {0};
  snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", argv[1]);
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  uint8_t mac[6];
  if (ioctl(fd, SIOCGIFHWADDR, &ifr) < 0) return perror("SIOCGIFHWADDR"), 1;
  memcpy(mac, ifr.ifr_hwaddr.sa_data, 6);
  if (ioctl(fd, SIOCGIFADDR, &ifr) < 0) return perror("SIOCGIFADDR"), 1;
  struct in_addr src = ((struct sockaddr_in *)&ifr.ifr_addr)->sin_addr, dst;
  if (ioctl(fd, SIOCGIFINDEX, &ifr) < 0) return perror("SIOCGIFINDEX"), 1;
  if (!inet_aton(argv[2], &dst)) return fprintf(stderr, "bad address\n"), 2;

  uint8_t f[54] = {0};
  memset(f, 0xff, 6); /* broadcast: slirp takes any destination MAC */
  memcpy(f + 6, mac, 6);
  f[12] = 0x08, f[13] = 0x00; /* the frame is IPv4 whatever skb->protocol says */
  uint8_t *ip = f + 14, *tcp = f + 34;
  ip[0] = 0x45, ip[3] = 40, ip[8] = 64, ip[9] = IPPROTO_TCP;
  memcpy(ip + 12, &src, 4), memcpy(ip + 16, &dst, 4);
  uint16_t c = htons(csum(ip, 20, 0));
  memcpy(ip + 10, &c, 2);
  uint16_t sport = htons((uint16_t)(40000 + getpid() % 20000)), dport = htons((uint16_t)atoi(argv[3]));
  memcpy(tcp, &sport, 2), memcpy(tcp + 2, &dport, 2);
  tcp[7] = 1, tcp[12] = 5 << 4, tcp[13] = 0x02 /* SYN */, tcp[14] = 0xff, tcp[15] = 0xff;
  uint8_t pseudo[32];
  memcpy(pseudo, ip + 12, 8), pseudo[8] = 0, pseudo[9] = IPPROTO_TCP, pseudo[10] = 0, pseudo[11] = 20;
  memcpy(pseudo + 12, tcp, 20);
  c = htons(csum(pseudo, 32, 0));
  memcpy(tcp + 16, &c, 2);

  int sent = 0;
  uint16_t protos[] = {ETH_P_ARP, ETH_P_ARP, ETH_P_IP};
  for (int i = 0; i < 3; i++) {
    int p = socket(AF_PACKET, SOCK_RAW, htons(protos[i]));
    if (p < 0) return perror("AF_PACKET"), 1;
    int bypass = i == 1;
    setsockopt(p, SOL_PACKET, PACKET_QDISC_BYPASS, &bypass, sizeof bypass);
    struct sockaddr_ll to = {.sll_family = AF_PACKET, .sll_protocol = htons(protos[i]),
                             .sll_ifindex = ifr.ifr_ifindex, .sll_halen = 6};
    memset(to.sll_addr, 0xff, 6);
    if (sendto(p, f, sizeof f, 0, (struct sockaddr *)&to, sizeof to) == sizeof f) sent++;
    close(p);
  }
  printf("sent %d\n", sent);
  return 0;
}
