/* A stand-in for busybox's `inotifyd - DIR...`, which Debian's busybox-static is built
 * without: watches each DIR for every inotify event and prints one line per event, as
 * busybox does: the event letters, a tab, the directory, and a tab and the name when the
 * event is on an entry in it. Output is flushed per line, so `docker logs -f` sees each
 * event as it comes. Built static by tests/e2e/test_file_events.py and bench/file_events.py.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/inotify.h>
#include <unistd.h>

static const struct { unsigned mask; char letter; } LETTERS[] = {
    {IN_ACCESS, 'a'}, {IN_MODIFY, 'c'}, {IN_ATTRIB, 'e'}, {IN_CLOSE_WRITE, 'w'},
    {IN_CLOSE_NOWRITE, '0'}, {IN_OPEN, 'r'}, {IN_MOVED_FROM, 'm'}, {IN_MOVED_TO, 'y'},
    {IN_CREATE, 'n'}, {IN_DELETE, 'd'}, {IN_DELETE_SELF, 'D'}, {IN_MOVE_SELF, 'M'},
};

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: inotifyd - DIR...\n");
        return 2;
    }
    int fd = inotify_init();
    if (fd < 0) { perror("inotify_init"); return 1; }
    int first = 2;
    for (int i = first; i < argc; i++) {
        if (inotify_add_watch(fd, argv[i], IN_ALL_EVENTS) < 0) { perror(argv[i]); return 1; }
    }
    char buf[65536] __attribute__((aligned(__alignof__(struct inotify_event))));
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0) { perror("read"); return 1; }
        for (char *p = buf; p < buf + n;) {
            struct inotify_event *ev = (struct inotify_event *)p;
            char letters[16];
            int k = 0;
            for (size_t j = 0; j < sizeof LETTERS / sizeof LETTERS[0]; j++)
                if (ev->mask & LETTERS[j].mask) letters[k++] = LETTERS[j].letter;
            letters[k] = 0;
            const char *dir = argv[first + ev->wd - 1];
            if (ev->len) printf("%s\t%s\t%s\n", letters, dir, ev->name);
            else printf("%s\t%s\n", letters, dir);
            fflush(stdout);
            p += sizeof *ev + ev->len;
        }
    }
}
