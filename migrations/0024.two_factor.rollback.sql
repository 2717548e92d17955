drop table login_challenges;
drop table recovery_codes;
drop table two_factor;
