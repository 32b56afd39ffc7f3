package registry

import (
	"regexp"
	"testing"
)

func TestValidNameMatchesPattern(t *testing.T) {
	re := regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)
	long := "a123456789012345678901234567890123456789012345678901234567890"
	for _, s := range []string{"", "a", "z", "A", "0a", "-a", "a-", "hello", "hello-world-2", "héllo", "a_b", "a.b", "a b", "a\n", long, long + "b", long + "bc", long + "b-", long + "bcd"} {
		if got, want := ValidName(s), re.MatchString(s); got != want {
			t.Errorf("ValidName(%q) = %v, want %v", s, got, want)
		}
	}
}
