package sandbox

import (
	goruntime "runtime"
	"sync/atomic"
)

// Instances are forked only from spawner threads: OS threads locked to a
// goroutine for the life of the server, which run nothing but starts.
//
// The kernel's parent-death signal (Pdeathsig, which kills an instance when
// the server dies) fires when the *thread* that forked the child ends, not
// the process. Go ends a thread whenever a goroutine exits while locked to
// it, as privateFS's namespace-entering goroutines do on purpose; a fork
// from an ordinary thread that Go later handed to one of them would have its
// instance killed for no reason (seen: managed runtimes SIGKILLed while
// reporting an init error, under parallel starts). Ptrace requests must come
// from the thread that forked the child as well, so the whole start runs on
// the spawner.
//
// Spawners are added when all are busy, up to maxSpawners; beyond that a
// start waits for one. A spawner that could not leave an instance's cgroup
// (startInCgroup) retires: it stays locked and parked, since ending its
// thread would kill the instance it forked, and a new one takes its place.
const maxSpawners = 8

type spawnJob struct {
	fn   func() (retire bool)
	done chan struct{}
}

var (
	spawnJobs = make(chan spawnJob)
	spawners  atomic.Int32
)

// onSpawner runs fn on a spawner thread and waits for it.
func onSpawner(fn func() (retire bool)) {
	job := spawnJob{fn: fn, done: make(chan struct{})}
	select {
	case spawnJobs <- job: // an idle spawner took it
	default:
		if spawners.Add(1) <= maxSpawners {
			go spawnerLoop()
		} else {
			spawners.Add(-1)
		}
		spawnJobs <- job
	}
	<-job.done
}

func spawnerLoop() {
	goruntime.LockOSThread() // never unlocked: see above
	for job := range spawnJobs {
		retire := job.fn()
		close(job.done)
		if retire {
			spawners.Add(-1)
			select {} // keep the thread, and what it forked, alive
		}
	}
}
