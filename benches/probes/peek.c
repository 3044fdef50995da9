// Question: what do the two system calls weir now makes around each reuse
// of a pooled upstream connection cost (issue 32)? At checkout,
// recv(MSG_PEEK | MSG_DONTWAIT) asks the kernel whether anything waits on
// the idle connection (nothing does: it answers EAGAIN); when a connection
// goes idle, setsockopt(TCP_QUICKACK, 1) sends any delayed ACK at once.
// One process, one loopback connection; ten alternating blocks of each;
// ns per call; for scale ns per send+recv of a small message, and the same
// followed by TCP_QUICKACK, when the call has a delayed ACK to send (the
// difference is what the ACK it sends costs, both ends on this core).
//
//   gcc -O2 -o /tmp/peek benches/probes/peek.c
//   taskset -c 0 /tmp/peek [iterations=1000000]
//
// Loopback only; bounded by the iteration count.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <fcntl.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec/1e9;}
int main(int argc,char**argv){
  int n=argc>1?atoi(argv[1]):1000000;
  int l=socket(AF_INET,SOCK_STREAM,0);struct sockaddr_in a={0};a.sin_family=AF_INET;a.sin_addr.s_addr=htonl(0x7f000001);
  bind(l,(void*)&a,sizeof a);listen(l,1);socklen_t al=sizeof a;getsockname(l,(void*)&a,&al);
  int c=socket(AF_INET,SOCK_STREAM,0);connect(c,(void*)&a,sizeof a);int s=accept(l,0,0);
  int one=1;setsockopt(c,IPPROTO_TCP,TCP_NODELAY,&one,4);setsockopt(s,IPPROTO_TCP,TCP_NODELAY,&one,4);
  fcntl(c,F_SETFL,fcntl(c,F_GETFL)|O_NONBLOCK);
  char buf[64],big[4096],msg[160];memset(msg,'m',sizeof msg);
  const char *name[4]={"recv(MSG_PEEK|MSG_DONTWAIT), idle","setsockopt(TCP_QUICKACK), nothing to ACK","send 160 B + recv it (scale)","send 160 B + recv it + TCP_QUICKACK"};
  double t[4]={0};long bad=0;
  for(int round=0;round<10;round++){
    for(int way=0;way<4;way++){
      double t0=now();
      for(int i=0;i<n/10;i++){
        if(way==0){ if(recv(c,buf,sizeof buf,MSG_PEEK|MSG_DONTWAIT)!=-1||errno!=EAGAIN) bad++; }
        else if(way==1){ setsockopt(c,IPPROTO_TCP,TCP_QUICKACK,&one,4); }
        else { send(s,msg,sizeof msg,0); size_t got=0; while(got<sizeof msg){ssize_t r=recv(c,big,sizeof big,0); if(r>0) got+=r;}
               if(way==3) setsockopt(c,IPPROTO_TCP,TCP_QUICKACK,&one,4); }
      }
      t[way]+=now()-t0;
    }
  }
  for(int way=0;way<4;way++) printf("%-40s %7.1f ns\n",name[way],t[way]/n*1e9);
  if(bad) printf("unexpected peek results: %ld\n",bad);
  return 0;
}
