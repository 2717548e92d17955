alter table jobs drop column note;
