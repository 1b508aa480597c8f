module flightrec.test/legacy

go 1.21
