// Question: on loopback TCP, does a response written with writev (head and
// body as two iovecs, as hyper does) cost the kernel more than the same bytes
// in one write (as HAProxy does)? One process, one connection: write, then
// the peer reads it all; ten alternating blocks of each; ns per write+read.
//
//   gcc -O2 -o /tmp/writev benches/probes/writev.c
//   taskset -c 0 /tmp/writev [head bytes=150] [body bytes=7] [iterations=200000]
//
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
  double tv=0,tw=0;
  for(int round=0;round<10;round++){
    for(int mode=0;mode<2;mode++){
      double t0=now();
      for(int i=0;i<n/10;i++){
        if(mode==0){struct iovec v[2]={{h,hlen},{b,blen}};writev(s,v,2);}
        else write(s,flat,hlen+blen);
        int got=0;while(got<hlen+blen){int k=read(c,r,65536);if(k<=0)return 1;got+=k;}
      }
      double t=now()-t0; if(mode==0)tv+=t;else tw+=t;
    }
  }
  printf("header %d body %d: writev %.0f ns, write %.0f ns per write+read (%d each)\n",hlen,blen,tv/n*1e9,tw/n*1e9,n);
  return 0;
}
