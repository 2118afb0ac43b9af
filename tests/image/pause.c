/* The pods' sandbox process (what a Kubernetes "pause" image runs): it holds the pod's
 * namespaces open, sleeps until told to stop, and reaps any zombie handed to it (it is PID 1
 * of the pod when the pod shares its process namespace). Built static by
 * tests/image/build.sh, since no image can be pulled here. */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) {
  (void)sig;
  _exit(0);
}

static void reap(int sig) {
  (void)sig;
  while (waitpid(-1, 0, WNOHANG) > 0) {
  }
}

int main(void) {
  signal(SIGINT, stop);
  signal(SIGTERM, stop);
  signal(SIGCHLD, reap);
  for (;;) pause();
}
