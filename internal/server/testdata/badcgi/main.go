// Command badcgi is a CGI test function whose output breaks the CGI contract.
package main

import "fmt"

func main() {
	fmt.Print("this is not a header line\n\nbody\n")
}
