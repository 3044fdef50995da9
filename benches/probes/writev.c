// Question: on loopback TCP, does the system call that sends an answer change
// what the kernel costs? hyper sends a head and a body with writev (two
// iovecs); HAProxy uses send on one flat buffer; std's TcpStream::write is
// send with MSG_NOSIGNAL; nginx reads with recv, tokio with recvfrom. One
// process, one connection: send 150 + 7 bytes (by default), then the peer
// reads them all; ten alternating blocks of each way; ns per send+read.
//
//   gcc -O2 -o /tmp/writev benches/probes/writev.c
//   taskset -c 0 /tmp/writev [head bytes=150] [body bytes=7] [iterations=200000]
//
// Ways: writev (2 iovecs) | sendmsg (2 iovecs) | write (flat) | send (flat)
// | send (flat) read back with recv instead of read.
// Loopback only; bounded by the iteration count.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>
#include <sys/uio.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec/1e9;}
int main(int argc,char**argv){
  int hlen=argc>1?atoi(argv[1]):150, blen=argc>2?atoi(argv[2]):7, n=argc>3?atoi(argv[3]):200000;
  int l=socket(AF_INET,SOCK_STREAM,0);struct sockaddr_in a={0};a.sin_family=AF_INET;a.sin_addr.s_addr=htonl(0x7f000001);
  bind(l,(void*)&a,sizeof a);listen(l,1);socklen_t al=sizeof a;getsockname(l,(void*)&a,&al);
  int c=socket(AF_INET,SOCK_STREAM,0);connect(c,(void*)&a,sizeof a);int s=accept(l,0,0);
  int one=1;setsockopt(c,IPPROTO_TCP,TCP_NODELAY,&one,4);setsockopt(s,IPPROTO_TCP,TCP_NODELAY,&one,4);
  char *h=malloc(hlen),*b=malloc(blen),*flat=malloc(hlen+blen),*r=malloc(65536);
  memset(h,'h',hlen);memset(b,'b',blen);memcpy(flat,h,hlen);memcpy(flat+hlen,b,blen);
  const char *name[5]={"writev","sendmsg","write","send","send+recv"};
  double t[5]={0};
  for(int round=0;round<10;round++){
    for(int way=0;way<5;way++){
      double t0=now();
      for(int i=0;i<n/10;i++){
        struct iovec v[2]={{h,hlen},{b,blen}};
        struct msghdr m={0};m.msg_iov=v;m.msg_iovlen=2;
        switch(way){
          case 0: writev(s,v,2); break;
          case 1: sendmsg(s,&m,MSG_NOSIGNAL|MSG_DONTWAIT); break;
          case 2: write(s,flat,hlen+blen); break;
          default: send(s,flat,hlen+blen,MSG_NOSIGNAL|MSG_DONTWAIT);
        }
        int got=0;
        while(got<hlen+blen){int k=way==4?recv(c,r,65536,0):read(c,r,65536);if(k<=0)return 1;got+=k;}
      }
      t[way]+=now()-t0;
    }
  }
  printf("header %d body %d, %d each:",hlen,blen,n);
  for(int w=0;w<5;w++)printf(" %s %.0f ns,",name[w],t[w]/n*1e9);
  printf(" per send+read\n");
  return 0;
}
