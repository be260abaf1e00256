package main

import "strings"

// tableLine returns the first line of the table that starts with figure.
func tableLine(out, figure string) string {
	for line := range strings.SplitSeq(out, "\n") {
		if strings.HasPrefix(line, figure) {
			return line
		}
	}
	return ""
}
