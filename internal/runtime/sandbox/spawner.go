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
// (startInCgroup) retires: it stays locked and takes no further starts,
// since ending its thread would kill the instance it forked, and a new one
// takes its place. Every spawner, retired or not, still runs the jobs sent
// to it alone (spawner.do): letting a held process go (Process.Run) must be
// done by the thread that traced it.
const maxSpawners = 8

type spawnJob struct {
	fn   func(sp *spawner) (retire bool)
	done chan struct{}
}

// spawner is one spawner thread.
type spawner struct {
	own chan spawnJob // jobs for this thread only
}

var (
	spawnJobs = make(chan spawnJob)
	spawners  atomic.Int32
)

// onSpawner runs fn on a spawner thread and waits for it.
func onSpawner(fn func(sp *spawner) (retire bool)) {
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

// do runs fn on sp's thread and waits for it.
func (sp *spawner) do(fn func()) {
	job := spawnJob{fn: func(*spawner) bool { fn(); return false }, done: make(chan struct{})}
	sp.own <- job
	<-job.done
}

func spawnerLoop() {
	goruntime.LockOSThread() // never unlocked: see above
	sp := &spawner{own: make(chan spawnJob)}
	for {
		var job spawnJob
		select {
		case job = <-spawnJobs:
		case job = <-sp.own:
		}
		retire := job.fn(sp)
		close(job.done)
		if retire {
			spawners.Add(-1)
			// Keep the thread, and what it forked, alive; serve only
			// this thread's own jobs.
			for job := range sp.own {
				job.fn(sp)
				close(job.done)
			}
		}
	}
}
