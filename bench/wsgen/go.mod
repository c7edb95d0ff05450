module dialtone/bench/wsgen

go 1.22
